/* mq_sizes.c - receive and peek messages of many sizes into buffers of many sizes.
 *
 *   mq_sizes /NAME        (under the shim, MQFS_MOUNT set, msgsize_max >= 65536)
 *
 * Meant to run under an AddressSanitizer build of the shim: every buffer is a heap block of
 * exactly the size passed, so any byte the shim writes past it (or reads past its own ioctl
 * buffers) is reported. Sizes straddle the shim's first request (1024 bytes) and the ioctl
 * chunk (16320). Checks lengths and contents itself; prints "checked N" and exits 0, or
 * prints each mismatch and exits 1.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqfs/peek.h"

#define MSGSIZE 65536

static long checks, failures;

static unsigned char pattern(size_t size, size_t i)
{
	return (unsigned char)(i * 13 + size);
}

static void check(int ok, const char *what, size_t size, size_t room, long got)
{
	checks++;
	if (!ok) {
		failures++;
		printf("FAIL %s: message %zu, buffer %zu: got %ld (%s)\n", what, size, room, got,
		       got < 0 ? strerror(errno) : "wrong bytes");
	}
}

static int same(const char *data, size_t size, size_t count)
{
	for (size_t i = 0; i < count; i++)
		if ((unsigned char)data[i] != pattern(size, i))
			return 0;
	return 1;
}

static void peek_sizes(mqd_t mqd, size_t size)
{
	size_t rooms[] = {1, size > 1 ? size - 1 : 1, size ? size : 1, size + 1, 1023, 1024, 1025,
			  16319, 16320, 16321, 40000, MSGSIZE};
	for (size_t r = 0; r < sizeof rooms / sizeof rooms[0]; r++) {
		size_t room = rooms[r];
		char *buf = malloc(room);
		struct mq_peek_attr attr = {.offset = 0, .buf_len = room, .buf = buf};
		long got = fcntl(mqd, F_MQ_PEEK, &attr);
		size_t want = size < room ? size : room;
		check(got == (long)want && same(buf, size, want) && attr.msg_prio == 3, "F_MQ_PEEK",
		      size, room, got);
		free(buf);
	}
	char *buf = malloc(MSGSIZE);
	unsigned prio = 0;
	struct mq_timedreceive2_args args = {.msg_len = MSGSIZE, .msg_prio = &prio, .msg_ptr = buf};
	long got = mq_timedreceive2(mqd, &args, MQ_PEEK, 0, NULL);
	check(got == (long)size && same(buf, size, size) && prio == 3, "MQ_PEEK", size, MSGSIZE,
	      got);
	free(buf);
}

static void one_size(mqd_t mqd, size_t size, size_t room)
{
	char *message = malloc(size ? size : 1);
	for (size_t i = 0; i < size; i++)
		message[i] = (char)pattern(size, i);
	if (mq_send(mqd, message, size, 3) != 0) {
		check(0, "mq_send", size, room, -1);
		free(message);
		return;
	}
	free(message);
	if (room == MSGSIZE)
		peek_sizes(mqd, size);
	char *buf = malloc(room);
	unsigned prio = 0;
	long got = mq_receive(mqd, buf, room, &prio);
	check(got == (long)size && same(buf, size, size) && prio == 3, "mq_receive", size, room, got);
	free(buf);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s /NAME\n", argv[0]);
		return 2;
	}
	char small_name[300];
	snprintf(small_name, sizeof small_name, "%s-small", argv[1]);
	struct mq_attr big = {.mq_maxmsg = 2, .mq_msgsize = MSGSIZE};
	struct mq_attr small = {.mq_maxmsg = 2, .mq_msgsize = 100};
	mqd_t mqd = mq_open(argv[1], O_CREAT | O_EXCL | O_RDWR, 0600, &big);
	mqd_t small_mqd = mq_open(small_name, O_CREAT | O_EXCL | O_RDWR, 0600, &small);
	if (mqd == (mqd_t)-1 || small_mqd == (mqd_t)-1) {
		perror("mq_open");
		return 1;
	}
	size_t sizes[] = {0, 1, 2, 1023, 1024, 1025, 16319, 16320, 16321, 32640, 32641, 40000,
			  65535, 65536};
	for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
		one_size(mqd, sizes[s], MSGSIZE);
	size_t small_sizes[] = {0, 1, 99, 100};
	for (size_t s = 0; s < sizeof small_sizes / sizeof small_sizes[0]; s++)
		one_size(small_mqd, small_sizes[s], 100);
	mq_close(mqd);
	mq_close(small_mqd);
	mq_unlink(argv[1]);
	mq_unlink(small_name);
	printf("checked %ld\n", checks);
	return failures ? 1 : 0;
}
