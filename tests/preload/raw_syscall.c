/* raw_syscall.c - mq_timedsend and mq_timedreceive as raw system calls, not glibc's.
 *
 * Usage: raw_syscall /NAME
 * On the kernel's queues both work. Under the shim the mqd_t is a descriptor of an mqfs
 * queue file, which the kernel's mq_* system calls do not know (EBADF): an LD_PRELOAD
 * library sees only the functions a program calls, not its syscall(2)s. Prints each result.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *what, long result)
{
	printf("%s: %s\n", what, result < 0 ? strerrorname_np(errno) : "ok");
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: raw_syscall /NAME\n");
		return 2;
	}
	struct mq_attr attr = {.mq_maxmsg = 2, .mq_msgsize = 16};
	mqd_t q = mq_open(argv[1], O_CREAT | O_RDWR | O_NONBLOCK, 0600, &attr);
	if (q < 0)
		return 1;
	report("syscall mq_timedsend", syscall(SYS_mq_timedsend, q, "raw", 3, 1, NULL));
	report("mq_send", mq_send(q, "libc", 4, 2));
	char buffer[16];
	unsigned prio;
	report("syscall mq_timedreceive",
	       syscall(SYS_mq_timedreceive, q, buffer, sizeof buffer, &prio, NULL));
	ssize_t got = mq_receive(q, buffer, sizeof buffer, &prio);
	printf("mq_receive: %zd\n", got);
	mq_close(q);
	mq_unlink(argv[1]);
	return 0;
}
