/* mq_checks.c - the kernel's order of checks on descriptors that are not the daemon's, and
 * its EFAULTs for bad pointers, as a transcript: run on the kernel's queues and under the
 * shim, it must print the same lines.
 *
 * Usage: mq_checks /NAME         parts one and two
 *        mq_checks /NAME large   part two for messages of several mqfs chunks (needs
 *                                msgsize_max >= 65536)
 *
 * Part one, the order of checks. The kernel validates the timeout (EINVAL; mq_timedsend
 * then the priority) before it looks at the descriptor (EBADF), and mq_setattr's and
 * mq_notify's arguments too. Every call runs on a closed descriptor, -1, both ends of a
 * pipe, a regular file and a kernel queue (made with syscall(SYS_mq_open), which the shim
 * never sees: a kernel queue under the shim too).
 *
 * Part two, bad pointers: every buffer, out-parameter and struct of the mq_* calls given as
 * a PROT_NONE page, on a queue of mq_open (the kernel's, or the mount's under the shim).
 * The kernel answers EFAULT, in its place among the other errors; never SIGSEGV.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

static long curmsgs(mqd_t q)
{
	struct mq_attr attr;
	return mq_getattr(q, &attr) < 0 ? -1 : attr.mq_curmsgs;
}

static void faults(const char *name, char *bad)
{
	char buf[MSGSIZE];
	unsigned prio = 0;
	struct mq_attr attr = {.mq_maxmsg = 2, .mq_msgsize = MSGSIZE};
	mq_unlink(name);
	show("open O_CREAT bad attr", "queue",
	     mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, (struct mq_attr *)bad));
	mqd_t q = mq_open(name, O_RDWR | O_CREAT | O_EXCL | O_NONBLOCK, 0600, &attr);
	if (q < 0) {
		printf("mq_open: %s\n", err());
		exit(1);
	}
	mqd_t reader = mq_open(name, O_RDONLY);

	show("send bad buffer", "queue", mq_send(q, bad, 5, 1));
	show("send bad buffer, length 0", "queue", mq_send(q, bad, 0, 1));
	show("receive it", "queue", mq_receive(q, buf, MSGSIZE, &prio));
	show("send bad buffer, too long", "queue", mq_send(q, bad, MSGSIZE + 1, 1));
	show("send bad buffer, prio 32768", "queue", mq_send(q, bad, 5, 32768));
	show("send bad buffer", "read-only queue", mq_send(reader, bad, 5, 1));
	show("send bad buffer", "-1", mq_send(-1, bad, 5, 1));
	show("timedsend bad timeout", "queue",
	     mq_timedsend(q, "x", 1, 1, (struct timespec *)bad));
	show("timedsend bad timeout", "-1", mq_timedsend(-1, "x", 1, 1, (struct timespec *)bad));
	printf("curmsgs: %ld\n", curmsgs(q));
	show("send 'one'", "queue", mq_send(q, "one", 3, 1));
	show("send 'uno'", "queue", mq_send(q, "uno", 3, 1));
	show("send bad buffer, full", "queue", mq_send(q, bad, 5, 1));
	show("send bad buffer, full, prio 32768", "queue", mq_send(q, bad, 5, 32768));

	show("receive bad buffer", "queue", mq_receive(q, bad, MSGSIZE, &prio));
	printf("curmsgs: %ld (the message is gone)\n", curmsgs(q));
	show("receive bad buffer again", "queue", mq_receive(q, bad, MSGSIZE, &prio));
	show("receive bad buffer, empty", "queue", mq_receive(q, bad, MSGSIZE, &prio));
	show("receive bad buffer, small", "queue", mq_receive(q, bad, 1, &prio));
	show("receive bad buffer", "-1", mq_receive(-1, bad, MSGSIZE, &prio));
	show("timedreceive bad timeout", "queue",
	     mq_timedreceive(q, buf, MSGSIZE, &prio, (struct timespec *)bad));
	show("send 'two'", "queue", mq_send(q, "two", 3, 2));
	memset(buf, '-', sizeof buf);
	show("receive bad msg_prio", "queue", mq_receive(q, buf, MSGSIZE, (unsigned *)bad));
	printf("buffer untouched: %d curmsgs %ld\n", buf[0] == '-', curmsgs(q));
	show("send ''", "queue", mq_send(q, "", 0, 3));
	show("receive zero-length, bad buffer", "queue", mq_receive(q, bad, MSGSIZE, &prio));
	printf("prio %u\n", prio);

	show("getattr bad attr", "queue", mq_getattr(q, (struct mq_attr *)bad));
	show("getattr bad attr", "-1", mq_getattr(-1, (struct mq_attr *)bad));
	show("setattr bad attr", "queue", mq_setattr(q, (struct mq_attr *)bad, NULL));
	show("setattr bad attr", "-1", mq_setattr(-1, (struct mq_attr *)bad, NULL));
	struct mq_attr blocking = {.mq_flags = 0};
	show("setattr bad old", "queue", mq_setattr(q, &blocking, (struct mq_attr *)bad));
	memset(&attr, 0, sizeof attr);
	mq_getattr(q, &attr);
	printf("flags now: nonblock %d\n", (attr.mq_flags & O_NONBLOCK) != 0);
	mq_close(reader);
	mq_close(q);
	mq_unlink(name);
}

/* Messages longer than one mqfs ioctl: the shim checks the whole buffer before the first
 * chunk, and drains a received one whose buffer fails part-way. */
static void large_faults(const char *name)
{
	enum { BIG = 65536, LONG = 40000 };
	long page = sysconf(_SC_PAGESIZE);
	size_t good = ((size_t)20000 + (size_t)page - 1) / (size_t)page * (size_t)page;
	char *area = mmap(NULL, good + BIG, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED || mprotect(area + good, BIG, PROT_NONE) < 0)
		exit(1);
	char *half_bad = area, *bad = area + good;
	memset(area, 'a', good);
	struct mq_attr attr = {.mq_maxmsg = 2, .mq_msgsize = BIG};
	mq_unlink(name);
	mqd_t q = mq_open(name, O_RDWR | O_CREAT | O_EXCL | O_NONBLOCK, 0600, &attr);
	if (q < 0) {
		printf("mq_open: %s\n", err());
		exit(1);
	}
	static char message[BIG], back[BIG];
	unsigned prio = 0;
	show("send bad buffer", "queue", mq_send(q, bad, LONG, 1));
	show("send half-bad buffer", "queue", mq_send(q, half_bad, LONG, 1));
	show("send half-bad buffer, too long", "queue", mq_send(q, half_bad, BIG + 1, 1));
	printf("curmsgs: %ld\n", curmsgs(q));
	for (int i = 0; i < LONG; i++)
		message[i] = (char)(i % 251);
	show("send 40000", "queue", mq_send(q, message, LONG, 4));
	show("receive half-bad buffer", "queue", mq_receive(q, half_bad, BIG, &prio));
	printf("curmsgs: %ld prio %u head intact %d\n", curmsgs(q), prio,
	       memcmp(half_bad, message, 1000) == 0);
	int faults = 0; /* more than 64 transfers left half-way in the daemon would be EBUSY */
	for (int round = 0; round < 70; round++) {
		if (mq_send(q, message, LONG, 5) < 0)
			printf("round %d: send %s\n", round, err());
		faults += mq_receive(q, half_bad, BIG, &prio) < 0 && errno == EFAULT;
	}
	printf("70 receives into a half-bad buffer: %d EFAULT, curmsgs %ld\n", faults, curmsgs(q));
	show("send 40000", "queue", mq_send(q, message, LONG, 6));
	show("receive", "queue", mq_receive(q, back, BIG, &prio));
	printf("prio %u intact %d\n", prio, memcmp(back, message, LONG) == 0);
	mq_close(q);
	mq_unlink(name);
}

int main(int argc, char **argv)
{
	if (argc != 2 && argc != 3)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *name = argv[1];
	if (argc == 3) {
		large_faults(name);
		return 0;
	}

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

	char *bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (bad == MAP_FAILED)
		return 1;
	faults(name, bad);
	return 0;
}
