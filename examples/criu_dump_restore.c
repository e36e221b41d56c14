/* criu_dump_restore.c - what CRIU wants F_MQ_PEEK for: checkpoint a POSIX message queue
 * without changing it, and restore it elsewhere.
 *
 *   cc -I include -o /tmp/criu_dump_restore examples/criu_dump_restore.c
 *   LD_PRELOAD=$PWD/.venv/lib/libmqfs-preload.so MQFS_MOUNT=/run/mqfs \
 *       /tmp/criu_dump_restore dump /jobs /tmp/jobs.mqdump
 *   LD_PRELOAD=$PWD/.venv/lib/libmqfs-preload.so MQFS_MOUNT=/run/mqfs \
 *       /tmp/criu_dump_restore restore /jobs-restored /tmp/jobs.mqdump
 *
 * dump reads every message in receive order with fcntl(mqd, F_MQ_PEEK, &attr) - index 0, 1,
 * ... until ENOMSG - and checks that mq_curmsgs is the same before and after: nothing is
 * consumed. restore creates the queue with the dumped mq_maxmsg and mq_msgsize (O_EXCL) and
 * mq_sends the messages in the dumped order, which gives the same receive order: priorities
 * sort themselves and messages of one priority keep their FIFO order.
 *
 * Only <mqueue.h> and the proposed API of <mqfs/peek.h>: on a kernel with the F_MQ_PEEK
 * patches it runs as is, without the shim.
 *
 * The dump file: a line "mqdump 1 MAXMSG MSGSIZE COUNT", then per message a line
 * "PRIORITY LENGTH" followed by LENGTH raw bytes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqfs/peek.h"

static int fail(const char *what)
{
	fprintf(stderr, "criu_dump_restore: %s: %s\n", what, strerror(errno));
	return 1;
}

static int dump(const char *name, const char *path)
{
	mqd_t q = mq_open(name, O_RDONLY | O_NONBLOCK);
	if (q < 0)
		return fail(name);
	struct mq_attr before, after;
	if (mq_getattr(q, &before) < 0)
		return fail("mq_getattr");
	char *buf = malloc((size_t)before.mq_msgsize);
	FILE *out = fopen(path, "wb");
	if (buf == NULL || out == NULL)
		return fail(path);
	/* The count goes in the header: write the messages to a temporary stream first. */
	char *body = NULL;
	size_t body_len = 0;
	FILE *records = open_memstream(&body, &body_len);
	if (records == NULL)
		return fail("open_memstream");
	long count = 0;
	for (;; count++) {
		struct mq_peek_attr attr = {
			.offset = (__s32)count,
			.buf_len = (size_t)before.mq_msgsize,
			.buf = buf,
		};
		int copied = fcntl(q, F_MQ_PEEK, &attr);
		if (copied < 0) {
			if (errno == ENOMSG) /* past the last message */
				break;
			return fail("fcntl(F_MQ_PEEK)");
		}
		fprintf(records, "%u %d\n", attr.msg_prio, copied);
		fwrite(buf, 1, (size_t)copied, records);
	}
	fclose(records);
	if (mq_getattr(q, &after) < 0)
		return fail("mq_getattr");
	fprintf(out, "mqdump 1 %ld %ld %ld\n", before.mq_maxmsg, before.mq_msgsize, count);
	fwrite(body, 1, body_len, out);
	if (fclose(out) != 0)
		return fail(path);
	free(body);
	free(buf);
	mq_close(q);
	printf("dumped %ld messages; curmsgs before %ld after %ld\n", count, before.mq_curmsgs,
	       after.mq_curmsgs);
	if (after.mq_curmsgs != before.mq_curmsgs || count != before.mq_curmsgs) {
		fprintf(stderr, "criu_dump_restore: the queue changed during the dump\n");
		return 1;
	}
	return 0;
}

static int restore(const char *name, const char *path)
{
	FILE *in = fopen(path, "rb");
	if (in == NULL)
		return fail(path);
	long maxmsg, msgsize, count;
	if (fscanf(in, "mqdump 1 %ld %ld %ld", &maxmsg, &msgsize, &count) != 3 || fgetc(in) != '\n'
	    || msgsize <= 0 || count < 0 || count > maxmsg) {
		fprintf(stderr, "criu_dump_restore: %s: not a dump\n", path);
		return 1;
	}
	struct mq_attr attr = {.mq_maxmsg = maxmsg, .mq_msgsize = msgsize};
	mqd_t q = mq_open(name, O_WRONLY | O_CREAT | O_EXCL, 0600, &attr);
	if (q < 0)
		return fail(name);
	char *buf = malloc((size_t)msgsize);
	if (buf == NULL)
		return fail("malloc");
	for (long i = 0; i < count; i++) {
		unsigned prio;
		long len;
		if (fscanf(in, "%u %ld", &prio, &len) != 2 || fgetc(in) != '\n' || len < 0 ||
		    len > msgsize || fread(buf, 1, (size_t)len, in) != (size_t)len) {
			fprintf(stderr, "criu_dump_restore: %s: message %ld is cut\n", path, i);
			return 1;
		}
		if (mq_send(q, buf, (size_t)len, prio) < 0)
			return fail("mq_send");
	}
	free(buf);
	fclose(in);
	mq_close(q);
	printf("restored %ld messages\n", count);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "dump") == 0)
		return dump(argv[2], argv[3]);
	if (argc == 4 && strcmp(argv[1], "restore") == 0)
		return restore(argv[2], argv[3]);
	fprintf(stderr, "usage: %s dump|restore /NAME FILE\n", argv[0]);
	return 2;
}
