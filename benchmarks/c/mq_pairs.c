/* mq_pairs.c - an unmodified POSIX program: mq_send + mq_receive pairs of 64-byte messages.
 *
 * Usage: mq_pairs NAME COUNT. Opens the existing queue NAME (the benchmark creates it and
 * removes it), then sends and receives COUNT messages one at a time on one thread, as the
 * benchmark's Python pair rows do, and prints the seconds per pair (the loop only: not the
 * process start, nor mq_open). The same binary runs on the kernel's mqueue and, under the
 * LD_PRELOAD shim (preload/), on an mqfs mount. Built and run by benchmarks/native.py.
 */
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MESSAGE_SIZE 64

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char *argv[])
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s NAME COUNT\n", argv[0]);
		return 2;
	}
	long count = strtol(argv[2], NULL, 10);
	mqd_t mqd = mq_open(argv[1], O_RDWR);
	if (count <= 0 || mqd == (mqd_t)-1) {
		fprintf(stderr, "%s: %s: %s\n", argv[0], argv[1],
			count <= 0 ? "COUNT must be positive" : strerror(errno));
		return 1;
	}
	char message[MESSAGE_SIZE] = {0};
	char received[MESSAGE_SIZE];
	unsigned int priority;
	double start = now();
	for (long i = 0; i < count; i++) {
		if (mq_send(mqd, message, sizeof message, 0) != 0 ||
		    mq_receive(mqd, received, sizeof received, &priority) != MESSAGE_SIZE) {
			fprintf(stderr, "%s: pair %ld: %s\n", argv[0], i, strerror(errno));
			return 1;
		}
	}
	double elapsed = now() - start;
	mq_close(mqd);
	printf("%.9e\n", elapsed / (double)count);
	return 0;
}
