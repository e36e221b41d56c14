/* mq_stress.c - many processes and threads sending and receiving on one queue.
 *
 * Usage: mq_stress /NAME PROCS THREADS COUNT
 * PROCS sender processes of THREADS threads each send COUNT messages "s P T I" (priority
 * 1..31, so some overtake others); PROCS receiver processes of THREADS threads receive until
 * a "stop" message (priority 0, sent by the parent after every sender has finished: it
 * comes after all the data). Receivers print each message they got as one line; the test
 * checks that every message arrived exactly once. Exit status non-zero on any error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MSGSIZE 64

static const char *queue_name;
static int procs, threads, count, process_index;

static void die(const char *what)
{
	fprintf(stderr, "mq_stress %d: %s: %s\n", getpid(), what, strerror(errno));
	_exit(1);
}

static void *sender(void *arg)
{
	int thread = (int)(long)arg;
	mqd_t q = mq_open(queue_name, O_WRONLY); /* a descriptor per thread, and one shared */
	if (q < 0)
		die("mq_open sender");
	for (int i = 0; i < count; i++) {
		char message[MSGSIZE];
		int len = snprintf(message, sizeof message, "s %d %d %d", process_index, thread, i);
		if (mq_send(q, message, (size_t)len, 1 + (unsigned)(i * 7 + thread) % 31) < 0)
			die("mq_send");
	}
	mq_close(q);
	return NULL;
}

static mqd_t shared_receiver;

static void *receiver(void *arg)
{
	(void)arg;
	for (;;) {
		char message[MSGSIZE + 1];
		unsigned prio;
		ssize_t len = mq_receive(shared_receiver, message, MSGSIZE, &prio);
		if (len < 0) {
			if (errno == EINTR)
				continue;
			die("mq_receive");
		}
		if (len == 4 && memcmp(message, "stop", 4) == 0)
			return NULL;
		message[len] = '\n'; /* one write per line: lines never interleave in the pipe */
		if (write(STDOUT_FILENO, message, (size_t)len + 1) != len + 1)
			die("write");
	}
}

static void run_threads(void *(*body)(void *))
{
	pthread_t ids[64];
	for (int t = 0; t < threads; t++)
		if (pthread_create(&ids[t], NULL, body, (void *)(long)t) != 0)
			die("pthread_create");
	for (int t = 0; t < threads; t++)
		pthread_join(ids[t], NULL);
}

int main(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	queue_name = argv[1];
	procs = atoi(argv[2]);
	threads = atoi(argv[3]);
	count = atoi(argv[4]);
	if (threads > 64)
		return 2;
	struct mq_attr attr = {.mq_maxmsg = 10, .mq_msgsize = MSGSIZE};
	mqd_t q = mq_open(queue_name, O_RDWR | O_CREAT | O_EXCL, 0600, &attr);
	if (q < 0)
		die("mq_open");
	pid_t senders[64], receivers[64];
	for (int p = 0; p < procs; p++) {
		if ((receivers[p] = fork()) == 0) {
			shared_receiver = mq_open(queue_name, O_RDONLY);
			if (shared_receiver < 0)
				die("mq_open receiver");
			run_threads(receiver);
			_exit(0);
		}
	}
	for (int p = 0; p < procs; p++) {
		if ((senders[p] = fork()) == 0) {
			process_index = p;
			run_threads(sender);
			_exit(0);
		}
	}
	int failed = 0, status;
	for (int p = 0; p < procs; p++)
		if (waitpid(senders[p], &status, 0) < 0 || status != 0)
			failed = 1;
	for (int i = 0; i < procs * threads; i++)
		if (mq_send(q, "stop", 4, 0) < 0)
			die("mq_send stop");
	for (int p = 0; p < procs; p++)
		if (waitpid(receivers[p], &status, 0) < 0 || status != 0)
			failed = 1;
	struct mq_attr left;
	if (mq_getattr(q, &left) < 0 || left.mq_curmsgs != 0)
		failed = 1;
	mq_close(q);
	if (mq_unlink(queue_name) < 0)
		die("mq_unlink");
	return failed;
}
