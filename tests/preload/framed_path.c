/* framed_path.c - mq_send and mq_receive on descriptors that are, and are not, queues.
 *
 * Usage: framed_path /NAME SCRATCH_FILE [STATUS_FILE]
 * A queue: mq_send, mq_receive (with a buffer one byte too small: EMSGSIZE), a zero-length
 * message and priorities. Then the same calls on a regular file opened O_RDWR (SCRATCH_FILE,
 * created empty) and, under the shim, on a status file of the mount: the kernel says EBADF
 * for both, and the scratch file must stay empty (a write at the shim's framed offset would
 * have made it huge). Prints each result; the same on the kernel and under the shim.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void result(const char *what, long value)
{
	if (value < 0)
		printf("%s: -1 %s\n", what, strerrorname_np(errno));
	else
		printf("%s: %ld\n", what, value);
}

static void not_a_queue(const char *what, int fd)
{
	char buffer[64];
	unsigned prio = 99;
	char label[80];
	snprintf(label, sizeof label, "%s mq_send", what);
	result(label, mq_send(fd, "x", 1, 0));
	snprintf(label, sizeof label, "%s mq_receive", what);
	result(label, mq_receive(fd, buffer, sizeof buffer, &prio));
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: framed_path /NAME SCRATCH_FILE [STATUS_FILE]\n");
		return 2;
	}
	struct mq_attr attr = {.mq_maxmsg = 4, .mq_msgsize = 64};
	mqd_t q = mq_open(argv[1], O_CREAT | O_EXCL | O_RDWR | O_NONBLOCK, 0600, &attr);
	if (q < 0) {
		perror("mq_open");
		return 1;
	}
	char buffer[65];
	unsigned prio = 99;
	result("send 'low' prio 1", mq_send(q, "low", 3, 1));
	result("send '' prio 7", mq_send(q, "", 0, 7));
	result("send 64 bytes prio 3", mq_send(q, "0123456789012345678901234567890123456789"
						  "012345678901234567890123", 64, 3));
	result("send 65 bytes", mq_send(q, buffer, 65, 0));
	result("receive into 63 bytes", mq_receive(q, buffer, 63, &prio));
	for (int i = 0; i < 3; i++) {
		long got = mq_receive(q, buffer, 64, &prio);
		printf("receive: %ld prio %u '%.*s'\n", got, prio, got > 0 ? (int)got : 0, buffer);
	}
	result("receive from empty", mq_receive(q, buffer, 64, &prio));
	mq_close(q);
	mq_unlink(argv[1]);

	int file = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
	not_a_queue("regular file", file);
	struct stat about;
	fstat(file, &about);
	printf("regular file size: %lld\n", (long long)about.st_size);
	close(file);
	if (argc > 3) {
		int status = open(argv[3], O_RDONLY);
		not_a_queue("status file", status);
		close(status);
	}
	return 0;
}
