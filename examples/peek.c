/* peek.c - print every message of an mqfs queue, in receive order, without consuming it.
 *
 *   cc -I include -o /tmp/peek examples/peek.c && /tmp/peek /run/mqfs/q/queue
 *
 * Each line: index, priority, length, then the payload (non-printable bytes as \xNN).
 * Messages longer than one chunk are read by offset, as MQFS_IOC_PEEK intends.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "mqfs.h"

static void print_bytes(const unsigned char *bytes, size_t length)
{
	for (size_t i = 0; i < length; i++) {
		if (isprint(bytes[i]) && bytes[i] != '\\')
			putchar(bytes[i]);
		else
			printf("\\x%02x", bytes[i]);
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s MNT/NAME/queue\n", argv[0]);
		return 2;
	}
	int fd = open(argv[1], O_RDONLY | O_NONBLOCK);
	if (fd < 0) {
		fprintf(stderr, "peek: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	static struct mqfs_peek request;
	for (uint64_t index = 0;; index++) {
		uint64_t offset = 0;
		do {
			memset(&request, 0, offsetof(struct mqfs_peek, data));
			request.index = index;
			request.offset = offset;
			int copied = ioctl(fd, MQFS_IOC_PEEK, &request);
			if (copied < 0) {
				if ((errno == ENOENT || errno == EAGAIN) && offset == 0) {
					close(fd); /* past the last message, or an empty queue */
					return 0;
				}
				fprintf(stderr, "peek: message %llu: %s\n",
					(unsigned long long)index, strerror(errno));
				close(fd);
				return 1;
			}
			if (offset == 0)
				printf("%llu\t%u\t%llu\t", (unsigned long long)index,
				       request.msg_prio, (unsigned long long)request.msg_len);
			print_bytes(request.data, (size_t)copied);
			offset += (uint64_t)copied;
		} while (offset < request.msg_len);
		putchar('\n');
	}
}
