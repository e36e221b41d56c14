/* mq_flow.c - an unmodified POSIX program: SENDERS processes send, RECEIVERS processes
 * receive, COUNT 64-byte messages in all, on one queue.
 *
 * Usage: mq_flow NAME SENDERS RECEIVERS COUNT [random]. Opens the existing queue NAME
 * (the benchmark creates it and removes it) in every process after the fork, as separate
 * programs would. Sender i sends COUNT/SENDERS messages (the first COUNT%SENDERS one
 * more), receiver j receives its share likewise, so every process ends. With "random"
 * each message has a random priority (0..32767, a per-sender seed), otherwise 0. The
 * processes start together once all have opened the queue (a pipe closed by the parent),
 * and the program prints the seconds per message from that start until the last one
 * exited (process exit included: small against the counts the benchmark runs). A receive
 * or send still waiting 60 s after its process started fails the run rather than hanging
 * it. The same binary runs on the
 * kernel's mqueue and, under the LD_PRELOAD shim (preload/), on an mqfs mount. Built and
 * run by benchmarks/native.py.
 */
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MESSAGE_SIZE 64
#define MAX_PROCESSES 64
#define WAIT_SECONDS 60

static long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int worker(const char *name, int sending, long count, unsigned seed, int ready, int go)
{
	mqd_t mqd = mq_open(name, sending ? O_WRONLY : O_RDONLY);
	if (mqd == (mqd_t)-1) {
		fprintf(stderr, "mq_flow: %s: %s\n", name, strerror(errno));
		return 1;
	}
	char byte = 1;
	if (write(ready, &byte, 1) != 1 || read(go, &byte, 1) != 0) /* EOF: start */
		return 1;
	char message[MESSAGE_SIZE] = {0};
	unsigned int priority = 0;
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += WAIT_SECONDS; /* for the whole run: the benchmark's are far shorter */
	for (long i = 0; i < count; i++) {
		if (sending) {
			if (seed)
				priority = (unsigned)rand_r(&seed) % 32768u;
			memcpy(message, &i, sizeof i);
			if (mq_timedsend(mqd, message, sizeof message, priority, &deadline) != 0) {
				fprintf(stderr, "mq_flow: send %ld: %s\n", i, strerror(errno));
				return 1;
			}
		} else {
			if (mq_timedreceive(mqd, message, sizeof message, &priority, &deadline) !=
			    MESSAGE_SIZE) {
				fprintf(stderr, "mq_flow: receive %ld: %s\n", i, strerror(errno));
				return 1;
			}
		}
	}
	mq_close(mqd);
	return 0;
}

int main(int argc, char *argv[])
{
	if (argc < 5 || argc > 6 || (argc == 6 && strcmp(argv[5], "random") != 0)) {
		fprintf(stderr, "usage: %s NAME SENDERS RECEIVERS COUNT [random]\n", argv[0]);
		return 2;
	}
	int senders = atoi(argv[2]), receivers = atoi(argv[3]);
	long count = strtol(argv[4], NULL, 10);
	if (senders < 1 || receivers < 1 || senders + receivers > MAX_PROCESSES || count < 1) {
		fprintf(stderr, "%s: 1..%d processes and a positive COUNT\n", argv[0], MAX_PROCESSES);
		return 2;
	}
	int ready[2], go[2];
	if (pipe(ready) != 0 || pipe(go) != 0) {
		perror("mq_flow: pipe");
		return 1;
	}
	int processes = senders + receivers;
	pid_t pids[MAX_PROCESSES];
	for (int p = 0; p < processes; p++) {
		int sending = p < senders;
		int index = sending ? p : p - senders, of = sending ? senders : receivers;
		long share = count / of + (index < count % of);
		pids[p] = fork();
		if (pids[p] < 0) {
			perror("mq_flow: fork");
			return 1;
		}
		if (pids[p] == 0) {
			close(ready[0]);
			close(go[1]);
			unsigned seed = argc == 6 && sending ? 2654435761u * (unsigned)(p + 1) : 0;
			_exit(worker(argv[1], sending, share, seed, ready[1], go[0]));
		}
	}
	close(ready[1]);
	close(go[0]);
	char byte;
	for (int p = 0; p < processes; p++)
		if (read(ready[0], &byte, 1) != 1) {
			fprintf(stderr, "mq_flow: a worker failed to start\n");
			close(go[1]);
			break;
		}
	long long start = now_ns();
	close(go[1]);
	int failed = 0;
	for (int p = 0; p < processes; p++) {
		int status;
		if (waitpid(pids[p], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
			failed = 1;
	}
	long long elapsed = now_ns() - start;
	if (failed) {
		fprintf(stderr, "mq_flow: a worker failed\n");
		return 1;
	}
	printf("%.9e\n", (double)elapsed * 1e-9 / (double)count);
	return 0;
}
