/* stop_continue.c - a blocked mq_receive is stopped (SIGSTOP) and continued (SIGCONT).
 *
 * Usage: stop_continue /NAME
 * A child blocks in mq_receive on an empty queue; the parent waits until it sleeps, stops
 * it, waits until it is stopped, continues it, then sends one message. The kernel restarts
 * the receive (no handler was called), so the child receives the message; the shim
 * restarts its own call the same way. Prints the child's result. Exit status non-zero on
 * any other error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char state_of(pid_t pid)
{
	char path[64], buffer[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *file = fopen(path, "r");
	if (file == NULL)
		return '?';
	size_t got = fread(buffer, 1, sizeof buffer - 1, file);
	fclose(file);
	buffer[got] = '\0';
	char *end = strrchr(buffer, ')');
	return end != NULL && end[1] == ' ' ? end[2] : '?';
}

static void wait_for_state(pid_t pid, char wanted)
{
	struct timespec pause = {0, 1000 * 1000};
	for (int i = 0; i < 20000 && state_of(pid) != wanted; i++)
		nanosleep(&pause, NULL);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: stop_continue /NAME\n");
		return 2;
	}
	struct mq_attr attr = {.mq_maxmsg = 1, .mq_msgsize = 16};
	mqd_t q = mq_open(argv[1], O_CREAT | O_RDWR, 0600, &attr);
	if (q < 0)
		return 1;
	fflush(stdout);
	pid_t child = fork();
	if (child == 0) {
		char buffer[16];
		unsigned prio;
		ssize_t got = mq_receive(q, buffer, sizeof buffer, &prio);
		if (got < 0)
			printf("receive: %s\n", strerrorname_np(errno));
		else
			printf("receive: %zd prio %u '%.*s'\n", got, prio, (int)got, buffer);
		fflush(stdout);
		_exit(0);
	}
	wait_for_state(child, 'S');
	kill(child, SIGSTOP);
	int status;
	if (waitpid(child, &status, WUNTRACED) != child || !WIFSTOPPED(status))
		return 1;
	printf("stopped\n");
	fflush(stdout);
	kill(child, SIGCONT);
	wait_for_state(child, 'S');
	if (mq_send(q, "after", 5, 3) < 0)
		return 1;
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status))
		return 1;
	mq_close(q);
	mq_unlink(argv[1]);
	printf("done\n");
	return 0;
}
