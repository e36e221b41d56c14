// SPDX-License-Identifier: GPL-2.0
/*
 * timedreceive2_selftest.c - a selftest for the two proposed non-destructive receive APIs,
 * written as their authors' kselftests are: self-contained (no mqfs header), each API
 * probed first and skipped as a whole where the kernel does not have it, one TAP line per
 * case, exit status 0 when every case passed, 4 (KSFT_SKIP) when nothing could run.
 *
 *   mq_timedreceive2(mqd, &args, MQ_PEEK, index, timeout)   syscall 548 (x86-64)
 *   fcntl(mqd, F_MQ_PEEK, &struct mq_peek_attr)               command 1041
 *
 * Usage: timedreceive2_selftest /PREFIX   (queues are /PREFIX-1, /PREFIX-2, ...; unlinked)
 *
 * Today's kernel has neither: both groups are skipped. Under the mqfs LD_PRELOAD shim with
 * MQFS_MOUNT set every case runs, unmodified.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef __NR_mq_timedreceive2
#define __NR_mq_timedreceive2 548
#endif
#ifndef MQ_PEEK
#define MQ_PEEK 2U
#endif
#ifndef F_MQ_PEEK
#define F_MQ_PEEK (1024 + 17)
#endif

struct mq_timedreceive2_args {
	size_t msg_len;
	unsigned int *msg_prio;
	char *msg_ptr;
};

struct mq_peek_attr {
	int offset;
	unsigned int msg_prio;
	size_t buf_len;
	char *buf;
};

#define KSFT_SKIP 4
#define MSGSIZE 128
#define MAXMSG 10

static const char *prefix;
static int queues, passed, failed, skipped, number;

static long mq_timedreceive2(mqd_t mqd, struct mq_timedreceive2_args *args, unsigned int flags,
			     unsigned long index, const struct timespec *timeout)
{
	return syscall(__NR_mq_timedreceive2, mqd, args, flags, index, timeout);
}

static long peek(mqd_t mqd, char *buf, size_t len, unsigned int *prio, unsigned long index)
{
	struct mq_timedreceive2_args args = {.msg_len = len, .msg_prio = prio, .msg_ptr = buf};
	return mq_timedreceive2(mqd, &args, MQ_PEEK, index, NULL);
}

static void result(int ok, const char *name, const char *why)
{
	number++;
	if (ok) {
		passed++;
		printf("ok %d %s\n", number, name);
	} else {
		failed++;
		printf("not ok %d %s # %s (errno %s)\n", number, name, why, strerrorname_np(errno));
	}
}

#define CHECK(name, cond) result((cond), (name), #cond)

static void skip(const char *name, const char *why)
{
	number++;
	skipped++;
	printf("ok %d %s # SKIP %s\n", number, name, why);
}

/* A fresh empty queue, opened O_RDWR | O_NONBLOCK; the name is unlinked at once. */
static mqd_t new_queue(long msgsize, int flags, char *name_out)
{
	char name[256];
	snprintf(name, sizeof name, "%s-%d", prefix, ++queues);
	struct mq_attr attr = {.mq_maxmsg = MAXMSG, .mq_msgsize = msgsize};
	mqd_t q = mq_open(name, O_RDWR | O_CREAT | O_EXCL | flags, 0600, &attr);
	if (q == (mqd_t)-1) {
		printf("Bail out! mq_open %s: %s\n", name, strerror(errno));
		exit(1);
	}
	if (name_out != NULL)
		strcpy(name_out, name);
	else
		mq_unlink(name);
	return q;
}

static long curmsgs(mqd_t q)
{
	struct mq_attr attr;
	return mq_getattr(q, &attr) < 0 ? -1 : attr.mq_curmsgs;
}

static int sends(mqd_t q, const char *text, unsigned int prio)
{
	return mq_send(q, text, strlen(text), prio) == 0;
}

/* -- mq_timedreceive2 ------------------------------------------------------------------ */

static void test_empty(void)
{
	mqd_t q = new_queue(MSGSIZE, O_NONBLOCK, NULL);
	char buf[MSGSIZE];
	unsigned int prio;
	errno = 0;
	CHECK("peek on an empty queue: EAGAIN", peek(q, buf, MSGSIZE, &prio, 0) == -1 &&
						    errno == EAGAIN);
	mq_close(q);
}

static void test_bad_descriptors(void)
{
	char buf[MSGSIZE];
	unsigned int prio;
	errno = 0;
	CHECK("peek on fd -1: EBADF", peek(-1, buf, MSGSIZE, &prio, 0) == -1 && errno == EBADF);
	int ends[2];
	if (pipe(ends) < 0) {
		skip("peek on a pipe: EBADF", "no pipe");
		return;
	}
	errno = 0;
	CHECK("peek on a pipe: EBADF",
	      peek(ends[0], buf, MSGSIZE, &prio, 0) == -1 && errno == EBADF);
	close(ends[0]);
	close(ends[1]);
}

static void test_write_only(void)
{
	char name[256], buf[MSGSIZE];
	unsigned int prio;
	mqd_t q = new_queue(MSGSIZE, O_NONBLOCK, name);
	sends(q, "hello", 1);
	mqd_t writer = mq_open(name, O_WRONLY);
	mq_unlink(name);
	errno = 0;
	CHECK("peek on an O_WRONLY descriptor: EBADF",
	      peek(writer, buf, MSGSIZE, &prio, 0) == -1 && errno == EBADF);
	mq_close(writer);
	mq_close(q);
}

static void test_small_buffer(void)
{
	mqd_t q = new_queue(MSGSIZE, O_NONBLOCK, NULL);
	char buf[MSGSIZE];
	unsigned int prio;
	sends(q, "hi", 1);
	errno = 0;
	CHECK("buffer smaller than mq_msgsize: EMSGSIZE",
	      peek(q, buf, MSGSIZE - 1, &prio, 0) == -1 && errno == EMSGSIZE);
	mq_close(q);
}

static void test_bad_buffer(void)
{
	mqd_t q = new_queue(MSGSIZE, O_NONBLOCK, NULL);
	unsigned int prio;
	char *bad = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	sends(q, "hello", 1);
	errno = 0;
	CHECK("bad msg_ptr: EFAULT", peek(q, bad, MSGSIZE, &prio, 0) == -1 && errno == EFAULT);
	CHECK("bad msg_ptr consumed nothing", curmsgs(q) == 1);
	munmap(bad, 4096);
	mq_close(q);
}

static void test_index_past_the_end(void)
{
	mqd_t q = new_queue(MSGSIZE, O_NONBLOCK, NULL);
	char buf[MSGSIZE];
	unsigned int prio;
	sends(q, "one", 1);
	sends(q, "two", 1);
	errno = 0;
	CHECK("index == count: ENOENT", peek(q, buf, MSGSIZE, &prio, 2) == -1 && errno == ENOENT);
	errno = 0;
	CHECK("index > count: ENOENT", peek(q, buf, MSGSIZE, &prio, 9) == -1 && errno == ENOENT);
	mq_close(q);
}

static void test_data_and_priority(void)
{
	mqd_t q = new_queue(MSGSIZE, O_NONBLOCK, NULL);
	char buf[MSGSIZE];
	unsigned int prio = 0;
	sends(q, "payload", 17);
	long got = peek(q, buf, MSGSIZE, &prio, 0);
	CHECK("peek returns the data and the priority",
	      got == 7 && memcmp(buf, "payload", 7) == 0 && prio == 17);
	CHECK("peek is non-destructive", curmsgs(q) == 1);
	got = peek(q, buf, MSGSIZE, &prio, 0);
	CHECK("a second peek sees the same message", got == 7 && prio == 17);
	mq_close(q);
}

static void test_priority_order(void)
{
	mqd_t q = new_queue(MSGSIZE, O_NONBLOCK, NULL);
	sends(q, "low", 1);
	sends(q, "high", 20);
	sends(q, "mid", 10);
	const char *expected[] = {"high", "mid", "low"};
	const unsigned int prios[] = {20, 10, 1};
	int ok = 1;
	for (unsigned long i = 0; i < 3; i++) {
		char buf[MSGSIZE];
		unsigned int prio;
		long got = peek(q, buf, MSGSIZE, &prio, i);
		ok &= got == (long)strlen(expected[i]) && memcmp(buf, expected[i], (size_t)got) == 0 &&
		      prio == prios[i];
	}
	CHECK("indices follow priority order", ok);
	mq_close(q);
}

static void test_fifo_within_a_priority(void)
{
	mqd_t q = new_queue(MSGSIZE, O_NONBLOCK, NULL);
	sends(q, "first", 5);
	sends(q, "second", 5);
	sends(q, "third", 5);
	const char *expected[] = {"first", "second", "third"};
	int ok = 1;
	for (unsigned long i = 0; i < 3; i++) {
		char buf[MSGSIZE];
		unsigned int prio;
		long got = peek(q, buf, MSGSIZE, &prio, i);
		ok &= got == (long)strlen(expected[i]) && memcmp(buf, expected[i], (size_t)got) == 0;
	}
	CHECK("FIFO within one priority", ok);
	mq_close(q);
}

static void test_large_message(void)
{
	enum { SIZE = 4096 };
	mqd_t q = new_queue(SIZE, O_NONBLOCK, NULL);
	static char out[SIZE], in[SIZE];
	for (int i = 0; i < SIZE; i++)
		out[i] = (char)(i * 7 + 3);
	unsigned int prio;
	mq_send(q, out, SIZE, 3);
	long got = peek(q, in, SIZE, &prio, 0);
	CHECK("a 4 KiB message, whole", got == SIZE && memcmp(in, out, SIZE) == 0 && prio == 3);
	mq_close(q);
}

static void test_without_peek(void)
{
	mqd_t q = new_queue(MSGSIZE, O_NONBLOCK, NULL);
	char buf[MSGSIZE];
	unsigned int prio = 0;
	sends(q, "taken", 4);
	struct mq_timedreceive2_args args = {.msg_len = MSGSIZE, .msg_prio = &prio, .msg_ptr = buf};
	long got = mq_timedreceive2(q, &args, 0, 0, NULL);
	CHECK("without MQ_PEEK: a normal receive",
	      got == 5 && memcmp(buf, "taken", 5) == 0 && prio == 4 && curmsgs(q) == 0);
	mq_close(q);
}

static void test_null_prio(void)
{
	mqd_t q = new_queue(MSGSIZE, O_NONBLOCK, NULL);
	char buf[MSGSIZE];
	sends(q, "noprio", 2);
	long got = peek(q, buf, MSGSIZE, NULL, 0);
	CHECK("msg_prio NULL", got == 6 && memcmp(buf, "noprio", 6) == 0);
	mq_close(q);
}

static void test_peeked_is_received(void)
{
	mqd_t q = new_queue(MSGSIZE, O_NONBLOCK, NULL);
	sends(q, "a", 1);
	sends(q, "bb", 3);
	sends(q, "ccc", 2);
	int ok = 1;
	for (int i = 0; i < 3; i++) {
		char peeked[MSGSIZE], received[MSGSIZE];
		unsigned int peek_prio, receive_prio;
		long p = peek(q, peeked, MSGSIZE, &peek_prio, 0);
		ssize_t r = mq_receive(q, received, MSGSIZE, &receive_prio);
		ok &= p >= 0 && p == r && peek_prio == receive_prio &&
		      memcmp(peeked, received, (size_t)r) == 0;
	}
	CHECK("what a peek shows is what receive returns", ok);
	mq_close(q);
}

#define ROUNDS 200

struct shared {
	mqd_t q;
	volatile int done;
	int bad_peeks;
};

static void *peeker(void *arg)
{
	struct shared *s = arg;
	while (!s->done) {
		char buf[MSGSIZE];
		unsigned int prio;
		long got = peek(s->q, buf, MSGSIZE, &prio, 0);
		if (got < 0 ? errno != EAGAIN : (got != 8 || memcmp(buf, "message-", 8) != 0 ||
						 prio != 6))
			s->bad_peeks++;
	}
	return NULL;
}

static void test_concurrent_peek_and_receive(void)
{
	struct shared s = {.q = new_queue(MSGSIZE, 0, NULL)};
	pthread_t thread;
	pthread_create(&thread, NULL, peeker, &s);
	int received = 0;
	for (int i = 0; i < ROUNDS; i++) {
		char buf[MSGSIZE];
		unsigned int prio;
		mq_send(s.q, "message-", 8, 6);
		received += mq_receive(s.q, buf, MSGSIZE, &prio) == 8;
	}
	s.done = 1;
	pthread_join(thread, NULL);
	CHECK("concurrent peek and receive", received == ROUNDS && s.bad_peeks == 0 &&
						     curmsgs(s.q) == 0);
	mq_close(s.q);
}

/* -- fcntl(F_MQ_PEEK) ------------------------------------------------------------------ */

static int fcntl_peek(mqd_t q, int offset, char *buf, size_t len, unsigned int *prio)
{
	struct mq_peek_attr attr = {.offset = offset, .buf_len = len, .buf = buf};
	int got = fcntl(q, F_MQ_PEEK, &attr);
	if (got >= 0 && prio != NULL)
		*prio = attr.msg_prio;
	return got;
}

static void test_fcntl(void)
{
	mqd_t q = new_queue(MSGSIZE, O_NONBLOCK, NULL);
	char buf[MSGSIZE];
	unsigned int prio = 0;
	errno = 0;
	CHECK("F_MQ_PEEK on an empty queue: ENOMSG",
	      fcntl_peek(q, 0, buf, MSGSIZE, &prio) == -1 && errno == ENOMSG);
	sends(q, "low", 1);
	sends(q, "truncated", 9);
	int got = fcntl_peek(q, 0, buf, MSGSIZE, &prio);
	CHECK("F_MQ_PEEK: data and priority", got == 9 && memcmp(buf, "truncated", 9) == 0 &&
						     prio == 9);
	got = fcntl_peek(q, 1, buf, MSGSIZE, &prio);
	CHECK("F_MQ_PEEK: offset 1 is the next in receive order",
	      got == 3 && memcmp(buf, "low", 3) == 0 && prio == 1);
	memset(buf, 0, sizeof buf);
	got = fcntl_peek(q, 0, buf, 5, &prio);
	CHECK("F_MQ_PEEK truncates to buf_len", got == 5 && memcmp(buf, "trunc", 5) == 0 &&
						       buf[5] == 0);
	errno = 0;
	CHECK("F_MQ_PEEK past the end: ENOMSG",
	      fcntl_peek(q, 2, buf, MSGSIZE, &prio) == -1 && errno == ENOMSG);
	errno = 0;
	CHECK("F_MQ_PEEK offset < 0: EINVAL",
	      fcntl_peek(q, -1, buf, MSGSIZE, &prio) == -1 && errno == EINVAL);
	errno = 0;
	CHECK("F_MQ_PEEK buf_len == 0: EINVAL",
	      fcntl_peek(q, 0, buf, 0, &prio) == -1 && errno == EINVAL);
	errno = 0;
	CHECK("F_MQ_PEEK buf == NULL: EINVAL",
	      fcntl_peek(q, 0, NULL, MSGSIZE, &prio) == -1 && errno == EINVAL);
	errno = 0;
	CHECK("F_MQ_PEEK bad attr: EFAULT", fcntl(q, F_MQ_PEEK, (struct mq_peek_attr *)8) == -1 &&
						    errno == EFAULT);
	CHECK("F_MQ_PEEK is non-destructive", curmsgs(q) == 2);
	int ends[2];
	if (pipe(ends) == 0) {
		errno = 0;
		CHECK("F_MQ_PEEK on a pipe: EBADF",
		      fcntl_peek(ends[0], 0, buf, MSGSIZE, &prio) == -1 && errno == EBADF);
		close(ends[0]);
		close(ends[1]);
	}
	mq_close(q);
}

int main(int argc, char **argv)
{
	if (argc != 2 || argv[1][0] != '/')
		return 2;
	prefix = argv[1];
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n");

	/* The series' probe: a kernel without the call says ENOSYS whatever the arguments. */
	errno = 0;
	int have_timedreceive2 = !(syscall(__NR_mq_timedreceive2, -1, NULL, 0, 0, NULL) == -1 &&
				   errno == ENOSYS);
	/* An unknown fcntl command is EINVAL; F_MQ_PEEK on what is not a queue is EBADF. */
	int ends[2], have_mq_peek = 0;
	if (pipe(ends) == 0) {
		char byte;
		struct mq_peek_attr attr = {.offset = 0, .buf_len = 1, .buf = &byte};
		errno = 0;
		have_mq_peek = !(fcntl(ends[0], F_MQ_PEEK, &attr) == -1 && errno == EINVAL);
		close(ends[0]);
		close(ends[1]);
	}

	void (*const timedreceive2_tests[])(void) = {
		test_empty, test_bad_descriptors, test_write_only, test_small_buffer,
		test_bad_buffer, test_index_past_the_end, test_data_and_priority,
		test_priority_order, test_fifo_within_a_priority, test_large_message,
		test_without_peek, test_null_prio, test_peeked_is_received,
		test_concurrent_peek_and_receive,
	};
	size_t count = sizeof timedreceive2_tests / sizeof timedreceive2_tests[0];
	if (have_timedreceive2)
		for (size_t i = 0; i < count; i++)
			timedreceive2_tests[i]();
	else
		skip("mq_timedreceive2", "syscall 548 is ENOSYS");
	if (have_mq_peek)
		test_fcntl();
	else
		skip("fcntl(F_MQ_PEEK)", "F_MQ_PEEK is EINVAL");

	printf("1..%d\n", number);
	printf("# Totals: pass:%d fail:%d xfail:0 xpass:0 skip:%d error:0\n", passed, failed,
	       skipped);
	if (failed)
		return 1;
	return passed == 0 ? KSFT_SKIP : 0;
}
