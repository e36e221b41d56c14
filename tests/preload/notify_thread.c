/* notify_thread.c - mq_notify(SIGEV_THREAD) as a program sees it, on the kernel and under
 * the shim (the transcripts must be equal).
 *
 *   notify_thread /NAME [rtmax]
 *
 * - status: the queue's status line (read() of the descriptor, as /dev/mqueue/NAME) while
 *   a SIGEV_THREAD registration is in place, after it fired and after mq_notify(NULL);
 * - quiet: the notification fires while the main thread sleeps in nanosleep and then in
 *   poll; neither is interrupted (EINTR), as no signal is involved;
 * - with "rtmax": the program handles SIGRTMAX itself (installed first); it can still use
 *   SIGEV_THREAD, and its handler is never called;
 * - once: the function runs once per firing, in another thread, with the right value, and
 *   registering again after a firing works (the function does it itself);
 * - threads: after mq_notify(NULL) and after mq_close of a registered descriptor the thread
 *   count comes back to what it was (glibc keeps one netlink thread for good, started by
 *   the first registration, which happens before the count is taken).
 *
 * The sender thread blocks every signal and sends only once the main thread is asleep
 * (/proc/self/task/TID/stat says 'S'), so a signal, if any, could only interrupt main.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *queue_name;
static mqd_t q;
static pid_t main_tid;
static sem_t notified, go;
static volatile int calls, last_value, other_thread, reregister;
static pthread_t main_thread;
static volatile sig_atomic_t rtmax_handled;

static void result(const char *what, int value)
{
	if (value < 0)
		printf("%s: -1 %s\n", what, strerrorname_np(errno));
	else
		printf("%s: %d\n", what, value);
}

static struct timespec after_ms(long ms)
{
	struct timespec when;
	clock_gettime(CLOCK_REALTIME, &when);
	when.tv_sec += ms / 1000;
	when.tv_nsec += (ms % 1000) * 1000000;
	if (when.tv_nsec >= 1000000000) {
		when.tv_sec++;
		when.tv_nsec -= 1000000000;
	}
	return when;
}

/* The status line with this process's pid shown as "self". */
static void status(const char *what)
{
	char line[256];
	ssize_t got = pread(q, line, sizeof line - 1, 0);
	if (got < 0) {
		printf("%s: read %s\n", what, strerrorname_np(errno));
		return;
	}
	line[got] = '\0';
	char *pid = strstr(line, "NOTIFY_PID:");
	if (pid != NULL && atoi(pid + 11) == getpid())
		strcpy(pid + 11, "self\n");
	printf("%s: %s", what, line);
}

static int threads(void)
{
	DIR *dir = opendir("/proc/self/task");
	int count = 0;
	for (struct dirent *entry; dir != NULL && (entry = readdir(dir)) != NULL;)
		count += entry->d_name[0] != '.';
	if (dir != NULL)
		closedir(dir);
	return count;
}

/* Whether the thread count comes down to `wanted` within 5 s. At most: the baseline may
 * have counted the previous notification's threads on their way out (a detached function
 * thread after its sem_post, the shim's helper after its reply), which a fast enough
 * program (the fast path's) counts before they are gone. */
static int threads_back_to(int wanted)
{
	struct timespec pause = {0, 1000000};
	for (int i = 0; i < 5000; i++) {
		if (threads() <= wanted)
			return 1;
		nanosleep(&pause, NULL);
	}
	return 0;
}

static void on_notify(union sigval value)
{
	calls++;
	last_value = value.sival_int;
	other_thread = !pthread_equal(pthread_self(), main_thread);
	if (reregister) { /* as programs do: register again from the function */
		reregister = 0;
		struct sigevent sev = {.sigev_notify = SIGEV_THREAD, .sigev_notify_function = on_notify};
		sev.sigev_value.sival_int = value.sival_int + 1;
		result("function registers again", mq_notify(q, &sev));
	}
	sem_post(&notified);
}

static int wait_notified(void)
{
	struct timespec limit = after_ms(5000);
	int got;
	while ((got = sem_timedwait(&notified, &limit)) < 0 && errno == EINTR)
		continue;
	return got;
}

static int register_thread(int value)
{
	struct sigevent sev = {.sigev_notify = SIGEV_THREAD, .sigev_notify_function = on_notify};
	sev.sigev_value.sival_int = value;
	return mq_notify(q, &sev);
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
	char *end = strrchr(text, ')');
	return end != NULL && end[1] == ' ' ? end[2] : '?';
}

/* Sends one message each time `go` is posted, once the main thread sleeps. */
static void *sender(void *arg)
{
	(void)arg;
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		while (sem_wait(&go) != 0)
			continue;
		struct timespec pause = {0, 100000};
		for (int i = 0; i < 50000 && main_state() != 'S'; i++)
			nanosleep(&pause, NULL);
		if (mq_send(q, "n", 1, 0) != 0)
			perror("sender: mq_send");
	}
	return NULL;
}

static void drain(void)
{
	char buffer[16];
	while (mq_receive(q, buffer, sizeof buffer, NULL) >= 0)
		continue;
}

static void on_rtmax(int signo)
{
	(void)signo;
	rtmax_handled++;
}

int main(int argc, char **argv)
{
	if (argc != 2 && (argc != 3 || strcmp(argv[2], "rtmax") != 0)) {
		fprintf(stderr, "usage: notify_thread /NAME [rtmax]\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	queue_name = argv[1];
	main_tid = gettid();
	main_thread = pthread_self();
	sem_init(&notified, 0, 0);
	sem_init(&go, 0, 0);
	struct mq_attr attr = {.mq_maxmsg = 4, .mq_msgsize = 8};
	q = mq_open(queue_name, O_RDWR | O_CREAT | O_EXCL | O_NONBLOCK, 0600, &attr);
	if (q == (mqd_t)-1) {
		perror("mq_open");
		return 1;
	}
	if (argc == 3) { /* a program that handles SIGRTMAX (the old shim's own signal) */
		struct sigaction action;
		memset(&action, 0, sizeof action);
		action.sa_handler = on_rtmax;
		sigaction(SIGRTMAX, &action, NULL);
	}
	pthread_t thread;
	pthread_create(&thread, NULL, sender, NULL);

	printf("== status\n");
	status("none");
	result("notify thread", register_thread(11));
	status("registered");
	result("notify thread again", register_thread(12));
	result("send", mq_send(q, "s", 1, 0));
	result("function ran", wait_notified());
	printf("value %d other thread %d\n", last_value, other_thread);
	status("fired");
	drain();
	result("notify thread", register_thread(13));
	result("unregister", mq_notify(q, NULL));
	status("unregistered");

	printf("== quiet\n");
	result("notify thread", register_thread(21));
	sem_post(&go);
	struct timespec nap = {0, 400 * 1000 * 1000};
	result("nanosleep", nanosleep(&nap, NULL));
	result("function ran", wait_notified());
	printf("value %d\n", last_value);
	drain();
	result("notify thread", register_thread(22));
	int fds[2];
	if (pipe(fds) != 0)
		return 1;
	struct pollfd idle = {.fd = fds[0], .events = POLLIN};
	sem_post(&go);
	result("poll", poll(&idle, 1, 400));
	result("function ran", wait_notified());
	printf("value %d\n", last_value);
	drain();
	printf("SIGRTMAX handled %d\n", (int)rtmax_handled);

	printf("== once\n");
	calls = 0;
	reregister = 1;
	result("notify thread", register_thread(31));
	result("send", mq_send(q, "1", 1, 0));
	result("function ran", wait_notified());
	drain();
	result("send", mq_send(q, "2", 1, 0)); /* fires the registration the function made */
	result("function ran", wait_notified());
	printf("value %d\n", last_value);
	drain();
	result("send", mq_send(q, "3", 1, 0)); /* nothing registered: no call */
	drain();

	printf("== threads\n");
	int baseline = threads();
	printf("calls %d\n", calls);
	result("notify thread", register_thread(41));
	result("unregister", mq_notify(q, NULL));
	printf("threads back after unregister: %d\n", threads_back_to(baseline));
	mqd_t other = mq_open(queue_name, O_RDWR);
	mqd_t kept = q;
	q = other;
	result("notify thread on another descriptor", register_thread(42));
	result("close it", mq_close(other));
	printf("threads back after close: %d\n", threads_back_to(baseline));
	q = kept;
	result("notify thread after close", register_thread(43));
	status("registered");
	result("unregister", mq_notify(q, NULL));
	printf("threads back: %d\n", threads_back_to(baseline));
	printf("calls %d SIGRTMAX handled %d\n", calls, (int)rtmax_handled);
	mq_close(q);
	mq_unlink(queue_name);
	printf("done\n");
	return 0;
}
