/* eintr_mixed.c - a blocked receive and a blocked send interrupted by a SA_RESTART handler
 * while another signal's handler has no SA_RESTART: the kernel restarts both (only the
 * interrupting handler's flag counts), untimed and timed. The shim's daemon way cannot tell
 * which signal interrupted it and fails with EINTR (README, "EINTR"); on a fastpath mount
 * the wait is the kernel's futex_waitv, restarted exactly as mq_timedreceive is.
 *
 * Usage: eintr_mixed /NAME
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t handled;
static mqd_t q;

static void on_signal(int signo)
{
	(void)signo;
	handled++;
}

/* After 400 ms: a message (the receive's), or room (the send's). */
static void *late(void *arg)
{
	struct timespec pause = {.tv_nsec = 400000000};
	nanosleep(&pause, NULL);
	if (arg != NULL) {
		char buffer[8];
		mq_receive(q, buffer, sizeof buffer, NULL);
	} else {
		mq_send(q, "late", 4, 2);
	}
	return NULL;
}

static void alarm_in_100ms(timer_t *timer)
{
	struct sigevent sev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGALRM};
	sev._sigev_un._tid = gettid();
	timer_create(CLOCK_MONOTONIC, &sev, timer);
	struct itimerspec when = {.it_value = {.tv_nsec = 100000000}};
	timer_settime(*timer, 0, &when, NULL);
}

static void report(const char *what, long result)
{
	if (result < 0)
		printf("%s: -1 %s, handler ran %d\n", what, strerrorname_np(errno), (int)handled);
	else
		printf("%s: %ld, handler ran %d\n", what, result, (int)handled);
}

static void one(const char *what, int sending, int timed)
{
	handled = 0;
	pthread_t other;
	pthread_create(&other, NULL, late, sending ? (void *)1 : NULL);
	timer_t timer;
	alarm_in_100ms(&timer);
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 5;
	char buffer[8];
	long result;
	if (sending)
		result = timed ? mq_timedsend(q, "x", 1, 0, &deadline) : mq_send(q, "x", 1, 0);
	else
		result = timed ? mq_timedreceive(q, buffer, sizeof buffer, NULL, &deadline)
			       : mq_receive(q, buffer, sizeof buffer, NULL);
	report(what, result);
	pthread_join(other, NULL);
	timer_delete(timer);
	if (result < 0 && !sending) /* the late message is still there */
		mq_receive(q, buffer, sizeof buffer, NULL);
	if (result < 0 && sending) /* the room is still there */
		mq_send(q, "x", 1, 0);
}

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct mq_attr attr = {.mq_maxmsg = 1, .mq_msgsize = 8};
	q = mq_open(argv[1], O_RDWR | O_CREAT | O_EXCL, 0600, &attr);
	if (q < 0) {
		perror("mq_open");
		return 1;
	}
	struct sigaction restarting = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
	struct sigaction not_restarting = {.sa_handler = on_signal};
	sigaction(SIGALRM, &restarting, NULL);
	sigaction(SIGUSR2, &not_restarting, NULL); /* installed, never raised */
	one("receive", 0, 0);
	one("timedreceive", 0, 1);
	mq_send(q, "full", 4, 0);
	one("send", 1, 0);
	one("timedsend", 1, 1);
	sigaction(SIGALRM, &not_restarting, NULL);
	one("send no SA_RESTART", 1, 1);
	char buffer[8];
	mq_receive(q, buffer, sizeof buffer, NULL);
	one("receive no SA_RESTART", 0, 0);
	mq_close(q);
	mq_unlink(argv[1]);
	return 0;
}
