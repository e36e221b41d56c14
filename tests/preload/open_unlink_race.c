/* open_unlink_race.c - mq_open(O_CREAT) while another thread unlinks the name in a loop.
 *
 * Usage: open_unlink_race /NAME COUNT
 * The main thread opens /NAME with O_CREAT COUNT times (O_CREAT|O_EXCL every other time)
 * and checks each descriptor answers mq_getattr; a second thread unlinks /NAME every 2 ms
 * until the main thread is done (under the shim without its retry, about one open in ten
 * lost the race; an unlinker that never pauses can win every retry, see preload/lookup.c). The kernel's mq_open is one step: it always gives a descriptor (or
 * EEXIST for O_EXCL when the name was taken). Prints the errnos of failed opens, which
 * must be none but EEXIST, and "done". Exit status non-zero on any other error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *queue_name;
static volatile int finished;

static void *unlinker(void *arg)
{
	(void)arg;
	struct timespec pause = {0, 2 * 1000 * 1000};
	while (!__atomic_load_n(&finished, __ATOMIC_ACQUIRE)) {
		mq_unlink(queue_name); /* ENOENT when nobody made it since: fine */
		nanosleep(&pause, NULL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: open_unlink_race /NAME COUNT\n");
		return 2;
	}
	queue_name = argv[1];
	int count = atoi(argv[2]), failures = 0;
	struct mq_attr attr = {.mq_maxmsg = 1, .mq_msgsize = 16};
	pthread_t thread;
	if (pthread_create(&thread, NULL, unlinker, NULL) != 0)
		return 1;
	for (int i = 0; i < count; i++) {
		int oflag = O_CREAT | O_RDWR | (i % 2 ? O_EXCL : 0);
		mqd_t q = mq_open(queue_name, oflag, 0600, &attr);
		if (q < 0) {
			if (errno != EEXIST) {
				printf("open %d: %s\n", i, strerrorname_np(errno));
				failures++;
			}
			continue;
		}
		struct mq_attr got;
		if (mq_getattr(q, &got) < 0 || got.mq_maxmsg != 1 || got.mq_msgsize != 16) {
			printf("getattr %d: %s\n", i, strerrorname_np(errno));
			failures++;
		}
		mq_close(q);
	}
	__atomic_store_n(&finished, 1, __ATOMIC_RELEASE);
	pthread_join(thread, NULL);
	mq_unlink(queue_name);
	printf("failures %d\ndone\n", failures);
	return 0;
}
