/* init_reentry.c - the shim's own set-up calls code that calls syscall() and fcntl().
 *
 *   init_reentry /NAME        (under the shim, MQFS_MOUNT set)
 *
 * The shim reads its environment variables while it looks up glibc's functions. This
 * program's getenv (exported with -rdynamic, so the shim's getenv calls land here) calls
 * syscall() and fcntl() first - as an allocator, a tracer or a sandboxing library may do
 * from inside anything. Those are the shim's interposed syscall and fcntl, which must not
 * wait for the very set-up they are called from (pthread_once would: a deadlock, ended
 * here by alarm). Prints "ok" after a queue round trip.
 */
#define _GNU_SOURCE

#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

char *getenv(const char *name)
{
	syscall(SYS_getpid);
	fcntl(0, F_GETFD);
	size_t len = strlen(name);
	for (char **entry = environ; entry != NULL && *entry != NULL; entry++)
		if (strncmp(*entry, name, len) == 0 && (*entry)[len] == '=')
			return *entry + len + 1;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s /NAME\n", argv[0]);
		return 2;
	}
	alarm(5);
	mqd_t mqd = mq_open(argv[1], O_CREAT | O_EXCL | O_RDWR, 0600, NULL);
	if (mqd == (mqd_t)-1) {
		perror("mq_open");
		return 1;
	}
	char buffer[8192];
	unsigned prio = 0;
	if (mq_send(mqd, "hello", 5, 4) != 0 || mq_receive(mqd, buffer, sizeof buffer, &prio) != 5 ||
	    prio != 4) {
		perror("round trip");
		return 1;
	}
	mq_close(mqd);
	mq_unlink(argv[1]);
	printf("ok\n");
	return 0;
}
