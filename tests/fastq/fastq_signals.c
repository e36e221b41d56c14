/* fastq_signals.c - a receive blocked on a mapped queue (fastq.c) and, side by side, on the
 * kernel's mqueue, hit by a signal: EINTR without SA_RESTART; restarted with it, untimed and
 * timed, then given the message sent later; untouched by SIGSTOP/SIGCONT.
 *
 * Usage: fastq_signals MAPPING_FILE. Prints one line per case: BACKEND CASE RESULT, where
 * RESULT is "EINTR", "got MESSAGE" or "errno N"; "kernel unavailable" if mq_open fails.
 * A forked helper waits until the receiver sleeps in its system call (/proc/PID/syscall),
 * signals it, and sends once it sleeps again. */
#define _GNU_SOURCE
#include "fastq.h"

#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif

#define MSGSIZE 64

static int handled[2]; /* the handler writes a byte: the helper knows it ran */

static void on_signal(int sig)
{
	(void)sig;
	char c = 1;
	ssize_t r = write(handled[1], &c, 1);
	(void)r;
}

struct backend {
	const char *name;
	long sleeps_in; /* the system call a blocked receive sleeps in */
	struct fastq q;
	mqd_t mqd; /* (mqd_t)-1: the mapped queue */
};

static ssize_t receive(struct backend *b, char *buf, int timed)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 30;
	unsigned prio;
	if (b->mqd == (mqd_t)-1)
		return fastq_receive(&b->q, buf, MSGSIZE, &prio, timed ? FASTQ_TIMED : 0, &deadline);
	ssize_t r = timed ? mq_timedreceive(b->mqd, buf, MSGSIZE, &prio, &deadline)
			  : mq_receive(b->mqd, buf, MSGSIZE, &prio);
	return r < 0 ? -errno : r;
}

static int send_late(struct backend *b)
{
	if (b->mqd == (mqd_t)-1)
		return fastq_send(&b->q, "late", 4, 0, 0, NULL);
	return mq_send(b->mqd, "late", 4, 0) ? -errno : 0;
}

static void give_up(const char *what)
{
	fprintf(stderr, "fastq_signals: timed out waiting for %s\n", what);
	_exit(3);
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* Poll until *pid* sleeps in system call *nr* ("running" while it runs). */
static void wait_in_syscall(pid_t pid, long nr)
{
	char path[64], text[256];
	snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
	for (double until = now() + 10; now() < until; usleep(1000)) {
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		char *end = text;
		long got = fgets(text, sizeof text, f) ? strtol(text, &end, 10) : -1;
		fclose(f);
		if (end != text && got == nr)
			return;
	}
	give_up("the receiver to sleep");
}

/* Poll until *pid*'s state letter is *state*. */
static void wait_state(pid_t pid, char state)
{
	char path[64], text[512];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	for (double until = now() + 10; now() < until; usleep(1000)) {
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		char *paren = fgets(text, sizeof text, f) ? strrchr(text, ')') : NULL;
		fclose(f);
		if (paren && paren[1] == ' ' && paren[2] == state)
			return;
	}
	give_up("the receiver to stop");
}

enum hit { SIGNAL_NO_RESTART, SIGNAL_RESTART, STOP_CONT };

static void run_case(struct backend *b, const char *name, enum hit hit, int timed)
{
	struct sigaction action = {.sa_handler = on_signal,
				   .sa_flags = hit == SIGNAL_RESTART ? SA_RESTART : 0};
	sigemptyset(&action.sa_mask);
	sigaction(SIGUSR1, &action, NULL);
	pid_t receiver = getpid();
	fflush(stdout);
	pid_t helper = fork();
	if (helper < 0) {
		perror("fork");
		exit(2);
	}
	if (helper == 0) {
		wait_in_syscall(receiver, b->sleeps_in);
		if (hit == STOP_CONT) {
			kill(receiver, SIGSTOP);
			wait_state(receiver, 'T');
			kill(receiver, SIGCONT);
		} else {
			char c;
			kill(receiver, SIGUSR1);
			if (read(handled[0], &c, 1) != 1)
				_exit(2);
			if (hit == SIGNAL_NO_RESTART)
				_exit(0); /* the receive has ended or will end with EINTR */
		}
		wait_in_syscall(receiver, b->sleeps_in); /* asleep again: restarted */
		_exit(send_late(b) ? 2 : 0);
	}
	char buf[MSGSIZE];
	ssize_t r = receive(b, buf, timed);
	int status;
	waitpid(helper, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "fastq_signals: the helper of %s %s failed\n", b->name, name);
		exit(2);
	}
	if (r == -EINTR)
		printf("%s %s EINTR\n", b->name, name);
	else if (r >= 0)
		printf("%s %s got %.*s\n", b->name, name, (int)r, buf);
	else
		printf("%s %s errno %d\n", b->name, name, (int)-r);
}

static void run_all(struct backend *b)
{
	run_case(b, "no-restart-untimed", SIGNAL_NO_RESTART, 0);
	run_case(b, "no-restart-timed", SIGNAL_NO_RESTART, 1);
	run_case(b, "restart-untimed", SIGNAL_RESTART, 0);
	run_case(b, "restart-timed", SIGNAL_RESTART, 1);
	run_case(b, "stop-cont-untimed", STOP_CONT, 0);
	run_case(b, "stop-cont-timed", STOP_CONT, 1);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: fastq_signals MAPPING_FILE\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (pipe(handled)) {
		perror("pipe");
		return 2;
	}
	struct backend mapped = {.name = "fastq", .sleeps_in = SYS_futex_waitv, .mqd = (mqd_t)-1};
	int fd = open(argv[1], O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int r = fd < 0 ? -errno : fastq_create(fd, 4, MSGSIZE);
	if (!r)
		r = fastq_attach(&mapped.q, fd, 4, MSGSIZE);
	if (r) {
		fprintf(stderr, "fastq_signals: %s: %s\n", argv[1], strerror(-r));
		return 2;
	}
	close(fd);
	run_all(&mapped);

	char name[64];
	snprintf(name, sizeof name, "/fastq-signals-%d", (int)getpid());
	struct mq_attr attr = {.mq_maxmsg = 4, .mq_msgsize = MSGSIZE};
	struct backend kernel = {.name = "kernel", .sleeps_in = SYS_mq_timedreceive};
	kernel.mqd = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
	if (kernel.mqd == (mqd_t)-1) {
		printf("kernel unavailable\n");
		return 0;
	}
	mq_unlink(name);
	run_all(&kernel);
	return 0;
}
