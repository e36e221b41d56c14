/* fork_lock.c - fork while another thread is inside the shim holding its lock.
 *
 *   fork_lock /NAME        (under the shim, MQFS_MOUNT set)
 *
 * A "holder" thread calls mq_notify(SIGEV_THREAD): the shim starts the registration's
 * helper thread with its lock held, and that pthread_create() call lands in this program's
 * pthread_create() (exported with -rdynamic, so it interposes on the shim's call), which
 * parks the thread there - inside the shim, lock held. The main thread then forks. The shim
 * must make fork wait for the lock (an atfork prepare handler) and unlock it in the child;
 * the child then registers SIGEV_THREAD on a queue of its own, which takes the lock, and
 * closes it. A child stuck on the lock is killed by its alarm after 5 s and reported.
 *
 * The holder is let go by a watcher thread as soon as the main thread is asleep inside fork
 * (waiting for the lock, /proc/self/task/TID/stat says 'S') or fork has returned, so fork
 * never waits on the holder and the holder never races fork's copy of the address space.
 *
 * Prints "child: exited 0" and "holder: 0" when all is well.
 */
#define _GNU_SOURCE

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static __thread int is_holder;
static int armed, forking, forked;
static sem_t holding, release_holder;
static pid_t main_tid;

static void deadline_in(struct timespec *when, int seconds)
{
	clock_gettime(CLOCK_REALTIME, when);
	when->tv_sec += seconds;
}

/* Interposes on glibc's pthread_create for the whole process, the shim included. */
int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *),
		   void *arg)
{
	static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
	if (real == NULL)
		real = (__typeof__(real))dlsym(RTLD_NEXT, "pthread_create");
	if (is_holder && __atomic_exchange_n(&armed, 0, __ATOMIC_SEQ_CST)) {
		sem_post(&holding); /* inside the shim's mq_notify, its lock held */
		struct timespec when;
		deadline_in(&when, 10);
		while (sem_timedwait(&release_holder, &when) != 0 && errno == EINTR)
			continue;
	}
	return real(thread, attr, start, arg);
}

static void notified(union sigval value)
{
	(void)value;
}

static void *holder(void *arg)
{
	mqd_t mqd = *(mqd_t *)arg;
	is_holder = 1;
	__atomic_store_n(&armed, 1, __ATOMIC_SEQ_CST);
	struct sigevent sev;
	memset(&sev, 0, sizeof sev);
	sev.sigev_notify = SIGEV_THREAD;
	sev.sigev_notify_function = notified;
	int result = mq_notify(mqd, &sev);
	return (void *)(long)(result == 0 ? 0 : errno);
}

static char main_state(void)
{
	char path[64], text[512];
	snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)main_tid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return '?';
	ssize_t got = read(fd, text, sizeof text - 1);
	close(fd);
	if (got <= 0)
		return '?';
	text[got] = '\0';
	char *end = strrchr(text, ')'); /* "pid (comm) S ..." */
	return end != NULL && end[1] == ' ' ? end[2] : '?';
}

static void *watcher(void *arg)
{
	(void)arg;
	struct timespec start, now, pause = {0, 100000};
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		if (__atomic_load_n(&forked, __ATOMIC_SEQ_CST) ||
		    (__atomic_load_n(&forking, __ATOMIC_SEQ_CST) && main_state() == 'S'))
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > 10)
			break; /* the holder's own timeout lets it go anyway */
		nanosleep(&pause, NULL);
	}
	sem_post(&release_holder);
	return NULL;
}

static void prepare(void) { __atomic_store_n(&forking, 1, __ATOMIC_SEQ_CST); }
static void parent(void) { __atomic_store_n(&forked, 1, __ATOMIC_SEQ_CST); }

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s /NAME\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	main_tid = gettid();
	sem_init(&holding, 0, 0);
	sem_init(&release_holder, 0, 0);
	mqd_t mqd = mq_open(argv[1], O_CREAT | O_EXCL | O_RDWR, 0600, NULL);
	if (mqd == (mqd_t)-1) {
		perror("mq_open");
		return 1;
	}
	/* Registered after the shim's (its constructor): runs first on prepare, last after. */
	pthread_atfork(prepare, parent, NULL);
	pthread_t holder_thread, watcher_thread;
	pthread_create(&holder_thread, NULL, holder, &mqd);
	struct timespec when;
	deadline_in(&when, 10);
	while (sem_timedwait(&holding, &when) != 0) {
		if (errno != EINTR) {
			printf("holder never reached the shim's pthread_create\n");
			return 1;
		}
	}
	pthread_create(&watcher_thread, NULL, watcher, NULL);
	pid_t child = fork();
	if (child == 0) {
		alarm(5);
		char own[300];
		snprintf(own, sizeof own, "%s-child", argv[1]);
		mqd_t mine = mq_open(own, O_CREAT | O_EXCL | O_RDWR, 0600, NULL);
		struct sigevent sev;
		memset(&sev, 0, sizeof sev);
		sev.sigev_notify = SIGEV_THREAD;
		sev.sigev_notify_function = notified;
		int registered = mq_notify(mine, &sev); /* takes the lock */
		mq_close(mine);
		mq_close(mqd);
		mq_unlink(own);
		_exit(mine == (mqd_t)-1 || registered != 0 ? 3 : 0);
	}
	int status;
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		continue;
	if (WIFEXITED(status))
		printf("child: exited %d\n", WEXITSTATUS(status));
	else
		printf("child: killed by signal %d (deadlocked on the shim's lock)\n",
		       WTERMSIG(status));
	void *holder_result;
	pthread_join(watcher_thread, NULL);
	pthread_join(holder_thread, &holder_result);
	printf("holder: %ld\n", (long)holder_result);
	mq_close(mqd);
	mq_unlink(argv[1]);
	return 0;
}
