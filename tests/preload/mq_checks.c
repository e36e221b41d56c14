/* mq_checks.c - what the kernel checks before the descriptor, on descriptors that are not
 * the daemon's, as a transcript: run on the kernel's queues and under the shim, it must
 * print the same lines.
 *
 * Usage: mq_checks /NAME
 *
 * The kernel validates the timeout (EINVAL; mq_timedsend then the priority) before it looks
 * at the descriptor (EBADF), and mq_setattr's and mq_notify's arguments too. Every call runs
 * on a closed descriptor, -1, both ends of a pipe, a regular file and a kernel queue (made
 * with syscall(SYS_mq_open), which the shim never sees: a kernel queue under the shim too).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MSGSIZE 64

static const char *err(void) { return strerrorname_np(errno); }

static void show(const char *what, const char *on, long result)
{
	if (result < 0)
		printf("%s on %s: -1 %s\n", what, on, err());
	else
		printf("%s on %s: %ld\n", what, on, result);
}

/* Each call of the list on one descriptor. */
static void calls(int fd, const char *on)
{
	char buf[MSGSIZE];
	unsigned prio = 0;
	const long nsecs[] = {-1, 1000000000L, 1000000001L};
	for (int i = 0; i < 3; i++) {
		struct timespec ts = {.tv_sec = 1, .tv_nsec = nsecs[i]};
		char what[64];
		snprintf(what, sizeof what, "timedreceive nsec %ld", nsecs[i]);
		show(what, on, mq_timedreceive(fd, buf, MSGSIZE, &prio, &ts));
		snprintf(what, sizeof what, "timedsend nsec %ld", nsecs[i]);
		show(what, on, mq_timedsend(fd, "x", 1, 0, &ts));
	}
	struct timespec negative = {.tv_sec = -1, .tv_nsec = 0};
	show("timedreceive sec -1", on, mq_timedreceive(fd, buf, MSGSIZE, &prio, &negative));
	show("timedsend sec -1", on, mq_timedsend(fd, "x", 1, 0, &negative));
	struct timespec past = {.tv_sec = 1, .tv_nsec = 0};
	show("timedreceive past", on, mq_timedreceive(fd, buf, MSGSIZE, &prio, &past));
	show("send prio 32768", on, mq_send(fd, "x", 1, 32768));
	show("timedsend prio 32768 bad timeout", on, mq_timedsend(fd, "x", 1, 32768, &negative));
	show("receive small buffer", on, mq_receive(fd, buf, 1, &prio));
	struct mq_attr attr;
	memset(&attr, 0, sizeof attr);
	show("getattr", on, mq_getattr(fd, &attr));
	struct mq_attr bad_flags = {.mq_flags = O_APPEND};
	show("setattr O_APPEND", on, mq_setattr(fd, &bad_flags, NULL));
	struct sigevent bad_notify = {.sigev_notify = 99};
	show("notify sigev_notify 99", on, mq_notify(fd, &bad_notify));
	struct sigevent bad_signal = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = 65};
	show("notify signal 65", on, mq_notify(fd, &bad_signal));
	show("notify NULL", on, mq_notify(fd, NULL));
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *name = argv[1];

	int closed = dup(1);
	close(closed);
	calls(closed, "closed");
	calls(-1, "-1");
	int ends[2];
	if (pipe(ends) < 0)
		return 1;
	calls(ends[0], "pipe read end");
	calls(ends[1], "pipe write end");
	char path[] = "/tmp/mq-checks-XXXXXX";
	int file = mkstemp(path);
	unlink(path);
	calls(file, "file");

	struct mq_attr attr = {.mq_maxmsg = 4, .mq_msgsize = MSGSIZE};
	long kernel = syscall(SYS_mq_open, name + 1, O_RDWR | O_CREAT | O_EXCL | O_NONBLOCK,
			      0600, &attr);
	if (kernel < 0) {
		printf("SYS_mq_open: %s\n", err());
		return 1;
	}
	calls((int)kernel, "kernel queue");
	close((int)kernel);
	if (syscall(SYS_mq_unlink, name + 1) < 0)
		printf("SYS_mq_unlink: %s\n", err());
	return 0;
}
