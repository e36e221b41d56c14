/* mq_pairs.c - an unmodified POSIX program: mq_send + mq_receive pairs of 64-byte messages.
 *
 * Usage: mq_pairs NAME COUNT [each]. Opens the existing queue NAME (the benchmark creates
 * it and removes it), then sends and receives COUNT messages one at a time on one thread,
 * as the benchmark's Python pair rows do, and prints the seconds per pair (the loop only:
 * not the process start, nor mq_open). With "each", every pair is timed alone
 * (clock_gettime around it, kept in memory) and its nanoseconds are printed one per line
 * after the loop, for the latency percentiles. The same binary runs on the kernel's mqueue
 * and, under the LD_PRELOAD shim (preload/), on an mqfs mount. Built and run by
 * benchmarks/native.py.
 */
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MESSAGE_SIZE 64

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char *argv[])
{
	if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "each") != 0)) {
		fprintf(stderr, "usage: %s NAME COUNT [each]\n", argv[0]);
		return 2;
	}
	long count = strtol(argv[2], NULL, 10);
	mqd_t mqd = mq_open(argv[1], O_RDWR);
	if (count <= 0 || mqd == (mqd_t)-1) {
		fprintf(stderr, "%s: %s: %s\n", argv[0], argv[1],
			count <= 0 ? "COUNT must be positive" : strerror(errno));
		return 1;
	}
	long long *each = NULL;
	if (argc == 4 && (each = calloc((size_t)count, sizeof *each)) == NULL) {
		fprintf(stderr, "%s: %s\n", argv[0], strerror(errno));
		return 1;
	}
	char message[MESSAGE_SIZE] = {0};
	char received[MESSAGE_SIZE];
	unsigned int priority;
	long long start = now_ns();
	for (long i = 0; i < count; i++) {
		long long pair_start = each ? now_ns() : 0;
		if (mq_send(mqd, message, sizeof message, 0) != 0 ||
		    mq_receive(mqd, received, sizeof received, &priority) != MESSAGE_SIZE) {
			fprintf(stderr, "%s: pair %ld: %s\n", argv[0], i, strerror(errno));
			return 1;
		}
		if (each)
			each[i] = now_ns() - pair_start;
	}
	long long elapsed = now_ns() - start;
	mq_close(mqd);
	if (each) {
		for (long i = 0; i < count; i++)
			printf("%lld\n", each[i]);
		free(each);
	} else {
		printf("%.9e\n", (double)elapsed * 1e-9 / (double)count);
	}
	return 0;
}
