/* hostile_client.c - mq_receive and F_MQ_PEEK on hostile_fuse's queues, under the shim.
 *
 *   hostile_client SCENARIO...
 *
 * For each scenario (a directory of hostile_fuse's mount, given as MQFS_MOUNT) one line:
 * "SCENARIO: RESULT ERRNO CONTENT", RESULT being the call's return value, ERRNO its errno
 * name when it failed ("-" otherwise), CONTENT "intact" when the bytes returned are the
 * server's pattern. recv-* scenarios use mq_receive, peek-* ones fcntl(F_MQ_PEEK); both into
 * a heap buffer of exactly 65536 bytes, so a sanitizer sees any overrun.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqfs/peek.h"

#define BUFFER 65536

static const char *errno_name(int code)
{
	switch (code) {
	case EIO: return "EIO";
	case EAGAIN: return "EAGAIN";
	case ENOMSG: return "ENOMSG";
	case EINVAL: return "EINVAL";
	case EMSGSIZE: return "EMSGSIZE";
	case ENOENT: return "ENOENT";
	case ENOTTY: return "ENOTTY";
	case EBADF: return "EBADF";
	default: return "other";
	}
}

static int intact(const unsigned char *data, long count)
{
	for (long i = 0; i < count; i++)
		if (data[i] != (unsigned char)(i * 7 + 3))
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		char name[300];
		snprintf(name, sizeof name, "/%s", argv[i]);
		mqd_t mqd = mq_open(name, O_RDONLY);
		if (mqd == (mqd_t)-1) {
			printf("%s: mq_open %s\n", argv[i], errno_name(errno));
			continue;
		}
		unsigned char *buffer = malloc(BUFFER);
		long result;
		errno = 0;
		if (strncmp(argv[i], "peek-", 5) == 0) {
			struct mq_peek_attr attr = {.offset = 0, .buf_len = BUFFER, .buf = (char *)buffer};
			result = fcntl(mqd, F_MQ_PEEK, &attr);
		} else {
			unsigned prio;
			result = mq_receive(mqd, (char *)buffer, BUFFER, &prio);
		}
		int code = errno;
		printf("%s: %ld %s %s\n", argv[i], result, result < 0 ? errno_name(code) : "-",
		       result >= 0 && intact(buffer, result) ? "intact" : "-");
		fflush(stdout);
		free(buffer);
		mq_close(mqd);
	}
	return 0;
}
