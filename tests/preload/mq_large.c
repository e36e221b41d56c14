/* mq_large.c - messages larger than one mqfs ioctl chunk (16320 bytes), as a transcript.
 *
 * Usage: mq_large /NAME   (needs msgsize_max >= 65536: the test sets it on both sides)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIG 65536

static char out[BIG + 1], in[BIG + 1];

static void fill(size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		out[i] = (char)((i * 31 + seed) % 251);
}

static void sent(const char *label, int result)
{
	printf("%s: %d %s\n", label, result, result < 0 ? strerrorname_np(errno) : "");
}

static void receive(const char *label, mqd_t q, size_t size, size_t expect_len, unsigned seed)
{
	unsigned prio = 0;
	ssize_t got = mq_receive(q, in, size, &prio);
	if (got < 0) {
		printf("%s: -1 %s\n", label, strerrorname_np(errno));
		return;
	}
	fill(expect_len, seed);
	int same = (size_t)got == expect_len && memcmp(in, out, expect_len) == 0;
	printf("%s: %zd prio %u intact %d\n", label, got, prio, same);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	struct mq_attr attr = {.mq_maxmsg = 3, .mq_msgsize = BIG};
	mqd_t q = mq_open(argv[1], O_RDWR | O_CREAT | O_EXCL | O_NONBLOCK, 0600, &attr);
	if (q < 0) {
		printf("mq_open: %s\n", strerrorname_np(errno));
		return 1;
	}
	fill(40000, 1);
	sent("send 40000", mq_send(q, out, 40000, 4));
	fill(BIG, 2);
	sent("send 65536", mq_send(q, out, BIG, 2));
	sent("send 65537", mq_send(q, out, BIG + 1, 2));
	fill(16321, 3);
	sent("send 16321", mq_send(q, out, 16321, 9));
	sent("send when full", mq_send(q, out, 20000, 9));
	receive("receive small buffer", q, BIG - 1, 0, 0);
	receive("receive 1", q, BIG + 1, 16321, 3);
	receive("receive 2", q, BIG, 40000, 1);
	receive("receive 3", q, BIG, BIG, 2);
	receive("receive empty", q, BIG, 0, 0);
	mq_close(q);
	return mq_unlink(argv[1]) < 0;
}
