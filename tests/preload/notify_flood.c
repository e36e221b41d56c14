/* notify_flood.c - the shim's notification signal handler must not block on a full pipe.
 *
 *   notify_flood /NAME COUNT        (under the shim, MQFS_MOUNT set)
 *
 * The shim's SIGEV_THREAD support: its signal handler writes a cookie into a pipe, and a
 * helper thread reads it and starts the notification thread. Here the helper is stalled
 * inside that pthread_create (this program's pthread_create, exported with -rdynamic, so it
 * interposes on the shim's call, parks the first call after arming), and the main thread
 * then queues COUNT notification-like signals (si_code SI_MESGQ) to itself - more than the
 * pipe holds. Each is handled before rt_tgsigqueueinfo returns, so if the handler blocked
 * on the full pipe the main thread would hang until the stalled helper gave up (10 s).
 * Then the helper is let go: the real notification must still run, and so must a second
 * one registered afterwards (the pipe still works).
 *
 * Prints "flood: COUNT signals handled", "stall: released by main" (not "timed out"),
 * "first notification: 1" and "second notification: 2". With MQFS_PRELOAD_DEBUG=1 the shim
 * adds the number of dropped wake-ups on stderr at exit.
 */
#define _GNU_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int stall_next, stall_timed_out;
static sem_t stalled, unstall, ran;
static int ran_value;

static void deadline_in(struct timespec *when, int seconds)
{
	clock_gettime(CLOCK_REALTIME, when);
	when->tv_sec += seconds;
}

static int wait_for(sem_t *sem, int seconds)
{
	struct timespec when;
	deadline_in(&when, seconds);
	int result;
	while ((result = sem_timedwait(sem, &when)) != 0 && errno == EINTR)
		continue;
	return result;
}

/* Interposes on glibc's pthread_create for the whole process, the shim's helper included. */
int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *),
		   void *arg)
{
	static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
	if (real == NULL)
		real = (__typeof__(real))dlsym(RTLD_NEXT, "pthread_create");
	if (__atomic_exchange_n(&stall_next, 0, __ATOMIC_SEQ_CST)) {
		sem_post(&stalled);
		if (wait_for(&unstall, 10) != 0)
			__atomic_store_n(&stall_timed_out, 1, __ATOMIC_SEQ_CST);
	}
	return real(thread, attr, start, arg);
}

static void notified(union sigval value)
{
	ran_value = value.sival_int;
	sem_post(&ran);
}

static int register_thread(mqd_t mqd, int value)
{
	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_THREAD;
	sev.sigev_notify_function = notified;
	sev.sigev_value.sival_int = value;
	return mq_notify(mqd, &sev);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s /NAME COUNT\n", argv[0]);
		return 2;
	}
	long count = atol(argv[2]);
	setvbuf(stdout, NULL, _IONBF, 0);
	sem_init(&stalled, 0, 0);
	sem_init(&unstall, 0, 0);
	sem_init(&ran, 0, 0);
	struct mq_attr attr = {.mq_maxmsg = 4, .mq_msgsize = 16};
	mqd_t mqd = mq_open(argv[1], O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
	if (mqd == (mqd_t)-1) {
		perror("mq_open");
		return 1;
	}
	if (register_thread(mqd, 1) != 0) { /* starts the helper: not stalled yet */
		perror("mq_notify");
		return 1;
	}
	__atomic_store_n(&stall_next, 1, __ATOMIC_SEQ_CST);
	if (mq_send(mqd, "x", 1, 0) != 0) { /* the notification: the helper stalls on it */
		perror("mq_send");
		return 1;
	}
	if (wait_for(&stalled, 10) != 0) {
		printf("the helper never started the notification thread\n");
		return 1;
	}
	siginfo_t info;
	memset(&info, 0, sizeof info);
	info.si_signo = SIGRTMAX;
	info.si_code = SI_MESGQ;
	info.si_pid = getpid();
	info.si_uid = getuid();
	info.si_value.sival_ptr = (void *)(uintptr_t)0xdead0000; /* no such cookie */
	long handled = 0;
	for (; handled < count; handled++)
		if (syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), SIGRTMAX, &info) != 0) {
			perror("rt_tgsigqueueinfo");
			break;
		}
	printf("flood: %ld signals handled\n", handled);
	sem_post(&unstall);
	int first = wait_for(&ran, 10) == 0 ? ran_value : -1;
	printf("stall: %s\n", __atomic_load_n(&stall_timed_out, __ATOMIC_SEQ_CST)
				       ? "timed out (the handler blocked the main thread)"
				       : "released by main");
	printf("first notification: %d\n", first);
	char message[16];
	if (mq_receive(mqd, message, sizeof message, NULL) != 1)
		perror("mq_receive");
	if (register_thread(mqd, 2) != 0 || mq_send(mqd, "y", 1, 0) != 0)
		perror("second registration");
	int second = wait_for(&ran, 10) == 0 ? ran_value : -1;
	printf("second notification: %d\n", second);
	mq_close(mqd);
	mq_unlink(argv[1]);
	return 0;
}
