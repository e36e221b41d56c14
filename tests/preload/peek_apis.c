/* peek_apis.c - the proposed peek APIs used the way their patches describe, as a transcript.
 *
 * Usage: peek_apis fcntl|syscall /NAME           the scenarios below, on one API
 *        peek_apis large-fcntl|large-syscall /NAME  messages of several mqfs chunks
 *                                                  (needs msgsize_max >= 65536)
 *        peek_apis faults-fcntl|faults-syscall /NAME  bad pointers: EFAULT, never SIGSEGV
 *        peek_apis foreign /NAME                 both APIs on descriptors of every kind
 *        peek_apis passthrough /NAME             other fcntl commands and syscalls
 *
 * fcntl is fcntl(mqd, F_MQ_PEEK, &struct mq_peek_attr) (ENOMSG past the end, truncation);
 * syscall is mq_timedreceive2(mqd, &args, MQ_PEEK, index, NULL) (EAGAIN on an empty queue,
 * ENOENT past the end, EMSGSIZE for msg_len < mq_msgsize). Both from <mqfs/peek.h>.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mqfs/peek.h"

#define MSGSIZE 64
#define BIG 65536

static int use_fcntl;

static const char *err(void) { return strerrorname_np(errno); }

/* One peek through the API under test: bytes copied or -1; *prio as the API reports it. */
static long peek(mqd_t q, long index, char *buf, size_t len, unsigned *prio)
{
	if (use_fcntl) {
		struct mq_peek_attr attr = {.offset = (__s32)index, .buf_len = len, .buf = buf};
		int copied = fcntl(q, F_MQ_PEEK, &attr);
		if (copied >= 0)
			*prio = attr.msg_prio;
		return copied;
	}
	struct mq_timedreceive2_args args = {.msg_len = len, .msg_prio = prio, .msg_ptr = buf};
	return mq_timedreceive2(q, &args, MQ_PEEK, (unsigned long)index, NULL);
}

static void print_peek(const char *label, mqd_t q, long index, size_t len)
{
	char buf[BIG + 1];
	unsigned prio = 12345;
	long got = peek(q, index, buf, len, &prio);
	if (got < 0)
		printf("%s %ld: -1 %s\n", label, index, err());
	else
		printf("%s %ld: prio %u len %ld '%.*s'\n", label, index, prio, got, (int)got, buf);
}

static long curmsgs(mqd_t q)
{
	struct mq_attr attr;
	return mq_getattr(q, &attr) < 0 ? -1 : attr.mq_curmsgs;
}

static mqd_t make(const char *name, long msgsize, int flags)
{
	struct mq_attr attr = {.mq_maxmsg = 10, .mq_msgsize = msgsize};
	mq_unlink(name);
	mqd_t q = mq_open(name, O_RDWR | O_CREAT | O_EXCL | flags, 0600, &attr);
	if (q < 0) {
		printf("mq_open %s: %s\n", name, err());
		exit(1);
	}
	return q;
}

static void send(mqd_t q, unsigned prio, const char *text)
{
	if (mq_send(q, text, strlen(text), prio) < 0)
		printf("send %u '%s': %s\n", prio, text, err());
}

static void scenarios(const char *name)
{
	mqd_t q = make(name, MSGSIZE, O_NONBLOCK);
	char buf[MSGSIZE + 1];
	unsigned prio = 0;

	/* An empty queue, then one message and indexes past it. */
	print_peek("empty", q, 0, MSGSIZE);
	print_peek("empty", q, 3, MSGSIZE);
	send(q, 4, "only");
	print_peek("one", q, 0, MSGSIZE);
	print_peek("past end", q, 1, MSGSIZE);
	print_peek("past end", q, 1000, MSGSIZE);
	if (mq_receive(q, buf, MSGSIZE, &prio) < 0)
		printf("receive only: %s\n", err());

	/* Several priorities, FIFO within each: peek every index, then receive them all. */
	send(q, 3, "alpha");
	send(q, 7, "bravo");
	send(q, 3, "charlie");
	send(q, 0, "delta");
	send(q, 7, "echo");
	send(q, 31, "foxtrot");
	send(q, 5, "");
	printf("curmsgs before peeks: %ld\n", curmsgs(q));
	for (long index = 0; index <= 7; index++)
		print_peek("peek", q, index, MSGSIZE);
	print_peek("peek again", q, 2, MSGSIZE);
	printf("curmsgs after peeks: %ld\n", curmsgs(q));

	/* Peek then receive: the same message each time. */
	for (int i = 0; i < 7; i++) {
		char peeked[MSGSIZE + 1];
		unsigned peek_prio = 99;
		long len = peek(q, 0, peeked, MSGSIZE, &peek_prio);
		ssize_t got = mq_receive(q, buf, MSGSIZE, &prio);
		if (got < 0) {
			printf("receive: -1 %s\n", err());
			continue;
		}
		int same = len == got && peek_prio == prio && memcmp(peeked, buf, (size_t)got) == 0;
		printf("receive: prio %u len %zd '%.*s' same as peek %d\n", prio, got, (int)got, buf,
		       same);
	}
	print_peek("drained", q, 0, MSGSIZE);

	/* A buffer smaller than the message (and than mq_msgsize). */
	send(q, 6, "hello world");
	print_peek("small buffer", q, 0, 4);
	print_peek("buffer msgsize-1", q, 0, MSGSIZE - 1);
	print_peek("buffer msgsize", q, 0, MSGSIZE);
	printf("curmsgs: %ld\n", curmsgs(q));

	/* A descriptor opened write-only, and one opened read-only. */
	mqd_t writer = mq_open(name, O_WRONLY);
	print_peek("write-only", writer, 0, MSGSIZE);
	mq_close(writer);
	mqd_t reader = mq_open(name, O_RDONLY);
	print_peek("read-only", reader, 0, MSGSIZE);
	mq_close(reader);

	if (use_fcntl) { /* the RFC's EINVAL checks */
		struct mq_peek_attr attr = {.offset = -1, .buf_len = MSGSIZE, .buf = buf};
		int r = fcntl(q, F_MQ_PEEK, &attr);
		printf("offset -1: %d %s\n", r, err());
		attr = (struct mq_peek_attr){.offset = 0, .buf_len = 0, .buf = buf};
		r = fcntl(q, F_MQ_PEEK, &attr);
		printf("buf_len 0: %d %s\n", r, err());
		attr = (struct mq_peek_attr){.offset = 0, .buf_len = MSGSIZE, .buf = NULL};
		r = fcntl(q, F_MQ_PEEK, &attr);
		printf("buf NULL: %d %s\n", r, err());
		attr = (struct mq_peek_attr){.offset = 0, .msg_prio = 77, .buf_len = 5, .buf = buf};
		r = fcntl64(q, F_MQ_PEEK, &attr);
		if (r < 0)
			printf("fcntl64: -1 %s\n", err());
		else
			printf("fcntl64: %d prio %u '%.*s'\n", r, attr.msg_prio, r, buf);
	} else { /* without MQ_PEEK: mq_timedreceive, and the series' EINVAL checks */
		struct mq_timedreceive2_args args = {.msg_len = MSGSIZE, .msg_prio = &prio,
						     .msg_ptr = buf};
		long got = mq_timedreceive2(q, &args, 0x80, 0, NULL);
		printf("unknown flag: %ld %s\n", got, err());
		got = mq_timedreceive2(q, &args, 0, 1, NULL);
		printf("index without MQ_PEEK: %ld %s\n", got, err());
		args.msg_prio = NULL;
		got = mq_timedreceive2(q, &args, MQ_PEEK, 0, NULL);
		printf("peek msg_prio NULL: %ld '%.*s'\n", got, (int)(got > 0 ? got : 0), buf);
		args.msg_prio = &prio;
		args.msg_len = MSGSIZE - 1;
		got = mq_timedreceive2(q, &args, 0, 0, NULL);
		printf("receive msgsize-1: %ld %s\n", got, err());
		args.msg_len = MSGSIZE;
		got = mq_timedreceive2(q, &args, 0, 0, NULL);
		printf("receive: %ld prio %u '%.*s' curmsgs %ld\n", got, prio,
		       (int)(got > 0 ? got : 0), buf, curmsgs(q));
		got = mq_timedreceive2(q, &args, 0, 0, NULL);
		printf("receive empty: %ld %s\n", got, err());
		struct mq_attr blocking = {.mq_flags = 0};
		mq_setattr(q, &blocking, NULL);
		struct timespec soon;
		clock_gettime(CLOCK_REALTIME, &soon);
		soon.tv_nsec += 50 * 1000 * 1000;
		if (soon.tv_nsec >= 1000000000L) {
			soon.tv_sec++;
			soon.tv_nsec -= 1000000000L;
		}
		got = mq_timedreceive2(q, &args, MQ_PEEK, 0, &soon);
		printf("peek empty, blocking, deadline: %ld %s\n", got, err());
		got = mq_timedreceive2(q, &args, 0, 0, &soon);
		printf("receive empty, blocking, deadline: %ld %s\n", got, err());
	}
	mq_close(q);
	mq_unlink(name);
}

static char out[BIG], in[BIG];

static void fill(char *to, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		to[i] = (char)((i * 31 + seed) % 251);
}

static void large(const char *name)
{
	mqd_t q = make(name, BIG, O_NONBLOCK);
	const size_t lengths[] = {40000, 16321, 100, BIG};
	const unsigned prios[] = {4, 9, 1, 4};
	for (int i = 0; i < 4; i++) {
		fill(out, lengths[i], (unsigned)i);
		if (mq_send(q, out, lengths[i], prios[i]) < 0)
			printf("send %zu: %s\n", lengths[i], err());
	}
	/* Receive order: 16321 (9), 40000 (4), 65536 (4), 100 (1). */
	const int order[] = {1, 0, 3, 2};
	for (int index = 0; index < 4; index++) {
		int i = order[index];
		unsigned prio = 0;
		memset(in, 0, sizeof in);
		long got = peek(q, index, in, BIG, &prio);
		fill(out, lengths[i], (unsigned)i);
		int intact = got == (long)lengths[i] && memcmp(in, out, lengths[i]) == 0;
		printf("peek %d: %ld prio %u intact %d\n", index, got, prio, intact);
	}
	if (use_fcntl) { /* truncated across several chunks */
		struct mq_peek_attr attr = {.offset = 1, .buf_len = 20000, .buf = in};
		memset(in, 0, sizeof in);
		int copied = fcntl(q, F_MQ_PEEK, &attr);
		fill(out, 40000, 0);
		printf("truncated: %d prio %u intact %d untouched %d\n", copied, attr.msg_prio,
		       memcmp(in, out, 20000) == 0, in[20000] == 0);
	}
	printf("curmsgs: %ld\n", curmsgs(q));
	mq_close(q);
	mq_unlink(name);
}

/* Bad pointers where each API takes one, in its order of checks; the queue is unchanged
 * by every peek. */
static void faults(const char *name)
{
	char *bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *read_only = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
	if (bad == MAP_FAILED || read_only == MAP_FAILED)
		exit(1);
	mqd_t q = make(name, MSGSIZE, O_NONBLOCK);
	mqd_t writer = mq_open(name, O_WRONLY);
	char buf[MSGSIZE];
	unsigned prio = 0;
	long r;
	if (use_fcntl) {
		struct mq_peek_attr attr = {.offset = 0, .buf_len = MSGSIZE, .buf = bad};
		r = fcntl(q, F_MQ_PEEK, &attr);
		printf("bad buf, empty: %ld %s\n", r, err());
		send(q, 3, "hello");
		r = fcntl(q, F_MQ_PEEK, &attr);
		printf("bad buf: %ld %s\n", r, err());
		r = fcntl(q, F_MQ_PEEK, (struct mq_peek_attr *)bad);
		printf("bad attr: %ld %s\n", r, err());
		r = fcntl(q, F_MQ_PEEK, (struct mq_peek_attr *)NULL);
		printf("NULL attr: %ld %s\n", r, err());
		r = fcntl(writer, F_MQ_PEEK, (struct mq_peek_attr *)bad);
		printf("bad attr, write-only: %ld %s\n", r, err());
		attr = (struct mq_peek_attr){.offset = 5, .buf_len = MSGSIZE, .buf = bad};
		r = fcntl(q, F_MQ_PEEK, &attr);
		printf("bad buf, past end: %ld %s\n", r, err());
		struct mq_peek_attr *frozen = (struct mq_peek_attr *)read_only;
		*frozen = (struct mq_peek_attr){.offset = 0, .msg_prio = 77, .buf_len = MSGSIZE,
						.buf = buf};
		mprotect(read_only, 4096, PROT_READ);
		r = fcntl(q, F_MQ_PEEK, frozen);
		printf("attr read-only (msg_prio not stored): %ld %s, buf '%.5s'\n", r, err(), buf);
	} else {
		struct mq_timedreceive2_args args = {.msg_len = MSGSIZE, .msg_prio = &prio,
						     .msg_ptr = bad};
		r = mq_timedreceive2(q, &args, MQ_PEEK, 0, NULL);
		printf("bad msg_ptr, empty: %ld %s\n", r, err());
		send(q, 3, "hello");
		r = mq_timedreceive2(q, &args, MQ_PEEK, 0, NULL);
		printf("bad msg_ptr: %ld %s\n", r, err());
		r = mq_timedreceive2(q, &args, MQ_PEEK, 1, NULL);
		printf("bad msg_ptr, past end: %ld %s\n", r, err());
		args.msg_len = MSGSIZE - 1;
		r = mq_timedreceive2(q, &args, MQ_PEEK, 0, NULL);
		printf("bad msg_ptr, small: %ld %s\n", r, err());
		args.msg_len = MSGSIZE;
		r = mq_timedreceive2(writer, &args, MQ_PEEK, 0, NULL);
		printf("bad msg_ptr, write-only: %ld %s\n", r, err());
		args.msg_ptr = NULL;
		r = mq_timedreceive2(q, &args, MQ_PEEK, 0, NULL);
		printf("NULL msg_ptr: %ld %s\n", r, err());
		args.msg_ptr = buf;
		args.msg_prio = (unsigned *)bad;
		r = mq_timedreceive2(q, &args, MQ_PEEK, 0, NULL);
		printf("bad msg_prio: %ld %s\n", r, err());
		r = mq_timedreceive2(q, (struct mq_timedreceive2_args *)bad, MQ_PEEK, 0, NULL);
		printf("bad args: %ld %s\n", r, err());
		r = mq_timedreceive2(q, NULL, MQ_PEEK, 0, NULL);
		printf("NULL args: %ld %s\n", r, err());
		r = mq_timedreceive2(q, (struct mq_timedreceive2_args *)bad, 0x80, 0, NULL);
		printf("bad args, unknown flag: %ld %s\n", r, err());
		r = mq_timedreceive2(-1, (struct mq_timedreceive2_args *)bad, MQ_PEEK, 0, NULL);
		printf("bad args, fd -1: %ld %s\n", r, err());
		printf("curmsgs: %ld\n", curmsgs(q));
		args = (struct mq_timedreceive2_args){.msg_len = MSGSIZE, .msg_prio = &prio,
						      .msg_ptr = bad};
		r = mq_timedreceive2(q, &args, 0, 0, NULL);
		printf("receive, bad msg_ptr: %ld %s curmsgs %ld\n", r, err(), curmsgs(q));
		send(q, 2, "");
		args.msg_ptr = NULL;
		r = mq_timedreceive2(q, &args, MQ_PEEK, 0, NULL);
		printf("zero-length, NULL msg_ptr: %ld prio %u\n", r, prio);
	}
	printf("curmsgs: %ld\n", curmsgs(q));
	mq_close(writer);
	mq_close(q);
	mq_unlink(name);
}

/* Both APIs on descriptors of every kind. Under the shim: EBADF on what is not a queue, as
 * the proposals say; mq_timedreceive2 without MQ_PEEK is mq_timedreceive everywhere; a
 * kernel queue (made with syscall(SYS_mq_open), which the shim never sees) gets the
 * kernel's own answer. Without the shim, today's kernel: EINVAL, ENOSYS. */
static void foreign(const char *name)
{
	int fds[2];
	if (pipe(fds) < 0)
		return;
	char path[] = "/tmp/peek-apis-XXXXXX";
	int file = mkstemp(path);
	unlink(path);
	mqd_t q = make(name, MSGSIZE, O_NONBLOCK);
	send(q, 1, "x");
	struct mq_attr kattr = {.mq_maxmsg = 4, .mq_msgsize = MSGSIZE};
	char kname[300];
	snprintf(kname, sizeof kname, "%s-kernel", name + 1);
	long kq = syscall(SYS_mq_open, kname, O_RDWR | O_CREAT | O_EXCL | O_NONBLOCK, 0600, &kattr);
	if (kq < 0 || syscall(SYS_mq_unlink, kname) < 0 ||
	    syscall(SYS_mq_timedsend, kq, "k", 1L, 1L, NULL) < 0)
		printf("kernel queue: %s\n", err());
	int closed = dup(1); /* a number no descriptor has */
	close(closed);
	const int targets[] = {fds[0], -1, closed, file, (int)kq, q};
	const char *labels[] = {"pipe", "-1", "closed", "file", "kernel queue", "queue"};
	for (int i = 0; i < 6; i++) {
		char buf[MSGSIZE];
		unsigned prio = 0;
		struct mq_peek_attr attr = {.offset = 0, .buf_len = MSGSIZE, .buf = buf};
		int r = fcntl(targets[i], F_MQ_PEEK, &attr);
		printf("%s fcntl: %d %s\n", labels[i], r, r < 0 ? err() : "");
		struct mq_timedreceive2_args args = {.msg_len = MSGSIZE, .msg_prio = &prio,
						     .msg_ptr = buf};
		long n = mq_timedreceive2(targets[i], &args, MQ_PEEK, 0, NULL);
		printf("%s syscall: %ld %s\n", labels[i], n, n < 0 ? err() : "");
		n = mq_timedreceive2(targets[i], &args, 0, 0, NULL);
		printf("%s syscall without MQ_PEEK: %ld %s\n", labels[i], n, n < 0 ? err() : "");
	}
	close(file);
	close((int)kq);
	mq_close(q);
	mq_unlink(name);
}

/* Everything but F_MQ_PEEK and mq_timedreceive2 reaches glibc with its arguments intact. */
static void passthrough(const char *name)
{
	mqd_t q = make(name, MSGSIZE, 0);
	int flags = fcntl(q, F_GETFL);
	printf("F_GETFL nonblock %d\n", (flags & O_NONBLOCK) != 0);
	printf("F_SETFL: %d\n", fcntl(q, F_SETFL, flags | O_NONBLOCK));
	printf("F_GETFL nonblock %d\n", (fcntl(q, F_GETFL) & O_NONBLOCK) != 0);
	int copy = fcntl(q, F_DUPFD_CLOEXEC, 100);
	printf("F_DUPFD_CLOEXEC >= 100: %d cloexec %d\n", copy >= 100,
	       fcntl(copy, F_GETFD) == FD_CLOEXEC);
	close(copy);
	char path[] = "/tmp/peek-apis-XXXXXX";
	int file = mkstemp(path);
	unlink(path);
	struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
	int r = fcntl64(file, F_SETLK, &lock);
	printf("F_SETLK: %d\n", r);
	lock = (struct flock){.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 2, .l_len = 3};
	r = fcntl(file, F_GETLK, &lock); /* our own lock never conflicts: F_UNLCK comes back */
	printf("F_GETLK: %d unlocked %d\n", r, lock.l_type == F_UNLCK);

	printf("SYS_getpid same: %d\n", syscall(SYS_getpid) == getpid());
	if (ftruncate(file, 16384) < 0 || pwrite(file, "0123456789", 10, 0) != 10 ||
	    pwrite(file, "page two", 8, 4096) != 8)
		printf("write failed\n");
	char buf[8] = {0};
	long n = syscall(SYS_pread64, file, buf, 4, 3L);
	printf("SYS_pread64: %ld '%.4s'\n", n, buf);
	char *map = (char *)syscall(SYS_mmap, NULL, 8192L, PROT_READ, MAP_SHARED, file,
				    4096L); /* six arguments, the last one used */
	printf("SYS_mmap six arguments: %d '%.8s'\n", map != MAP_FAILED,
	       map != MAP_FAILED ? map : "");
	if (map != MAP_FAILED) {
		n = syscall(SYS_munmap, map, 8192L);
		printf("SYS_munmap: %ld\n", n);
	}
	n = syscall(100000);
	printf("unknown syscall: %ld %s\n", n, err());
	close(file);
	mq_close(q);
	mq_unlink(name);
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *mode = argv[1], *name = argv[2];
	if (strcmp(mode, "fcntl") == 0 || strcmp(mode, "syscall") == 0) {
		use_fcntl = mode[0] == 'f';
		scenarios(name);
	} else if (strcmp(mode, "large-fcntl") == 0 || strcmp(mode, "large-syscall") == 0) {
		use_fcntl = mode[6] == 'f';
		large(name);
	} else if (strcmp(mode, "faults-fcntl") == 0 || strcmp(mode, "faults-syscall") == 0) {
		use_fcntl = mode[7] == 'f';
		faults(name);
	} else if (strcmp(mode, "foreign") == 0) {
		foreign(name);
	} else if (strcmp(mode, "passthrough") == 0) {
		passthrough(name);
	} else {
		return 2;
	}
	return 0;
}
