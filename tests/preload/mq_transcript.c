/* mq_transcript.c - POSIX message-queue behaviour as a transcript, for side-by-side runs.
 *
 * Usage: mq_transcript PREFIX   (PREFIX makes the queue names unique; all are unlinked)
 *        mq_transcript PREFIX fork-thread   (only SIGEV_THREAD across fork)
 * Run once on the kernel and once under the mqfs LD_PRELOAD shim: the outputs must be
 * identical. Every line is a call and its result: the value, or -1 and the errno's name.
 */
#define _GNU_SOURCE
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *prefix;

static const char *name(const char *suffix)
{
	static char buffers[8][300];
	static int next;
	char *out = buffers[next++ % 8];
	snprintf(out, 300, "/%s-%s", prefix, suffix);
	return out;
}

static void result(const char *label, long value)
{
	if (value < 0)
		printf("%s: -1 %s\n", label, strerrorname_np(errno));
	else
		printf("%s: %ld\n", label, value);
	fflush(stdout);
}

/* mq_open's result without the descriptor number, which may differ. */
static mqd_t opened(const char *label, mqd_t mqd)
{
	if (mqd < 0)
		result(label, -1);
	else
		printf("%s: ok\n", label);
	return mqd;
}

static void received(const char *label, mqd_t mqd, size_t size, const struct timespec *when)
{
	char buffer[70000];
	unsigned prio = 12345;
	ssize_t got = when ? mq_timedreceive(mqd, buffer, size, &prio, when)
			   : mq_receive(mqd, buffer, size, &prio);
	if (got < 0) {
		result(label, -1);
		return;
	}
	printf("%s: %zd prio %u '%.*s'\n", label, got, prio, got > 40 ? 40 : (int)got, buffer);
}

static void attributes(const char *label, mqd_t mqd)
{
	struct mq_attr attr;
	if (mq_getattr(mqd, &attr) < 0)
		result(label, -1);
	else
		printf("%s: flags %#lx maxmsg %ld msgsize %ld curmsgs %ld\n", label, attr.mq_flags,
		       attr.mq_maxmsg, attr.mq_msgsize, attr.mq_curmsgs);
}

static struct timespec after_ms(long ms)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	now.tv_nsec += ms * 1000000;
	now.tv_sec += now.tv_nsec / 1000000000;
	now.tv_nsec %= 1000000000;
	return now;
}

static void names(void)
{
	char longest[300], too_long[300];
	int used = snprintf(longest, sizeof longest, "/%s-", prefix);
	memset(longest + used, 'n', 256 - used);
	longest[256] = '\0'; /* 255 bytes after the slash */
	strcpy(too_long, longest);
	strcat(too_long, "x");
	struct mq_attr attr = {.mq_maxmsg = 2, .mq_msgsize = 16};
	opened("open no slash", mq_open("noslash", O_RDWR | O_CREAT, 0600, &attr));
	opened("open /", mq_open("/", O_RDWR | O_CREAT, 0600, &attr));
	opened("open /a/b", mq_open("/a/b", O_RDWR | O_CREAT, 0600, &attr));
	opened("open /.", mq_open("/.", O_RDWR | O_CREAT, 0600, &attr));
	opened("open /..", mq_open("/..", O_RDWR | O_CREAT, 0600, &attr));
	opened("open 256 bytes", mq_open(too_long, O_RDWR | O_CREAT, 0600, &attr));
	mqd_t q = opened("open 255 bytes", mq_open(longest, O_RDWR | O_CREAT, 0600, &attr));
	if (q >= 0)
		mq_close(q);
	result("unlink 255 bytes", mq_unlink(longest));
	result("unlink again", mq_unlink(longest));
	result("unlink no slash", mq_unlink("noslash"));
	result("unlink /", mq_unlink("/"));
	result("unlink 256 bytes", mq_unlink(too_long));
	opened("open missing", mq_open(name("missing"), O_RDONLY));
	/* With _FORTIFY_SOURCE and a flag the compiler cannot see, mq_open(name, oflag) is
	 * glibc's __mq_open_2 */
	volatile int oflag = O_WRONLY;
	opened("open missing fortified", mq_open(name("missing"), oflag));
}

static void open_flags(void)
{
	struct mq_attr attr = {.mq_maxmsg = 4, .mq_msgsize = 64};
	struct mq_attr bad = {.mq_maxmsg = 0, .mq_msgsize = 64};
	const char *q = name("flags");
	opened("create bad attr", mq_open(q, O_RDWR | O_CREAT, 0600, &bad));
	mqd_t a = opened("create excl", mq_open(q, O_RDWR | O_CREAT | O_EXCL, 0640, &attr));
	opened("create excl again", mq_open(q, O_RDWR | O_CREAT | O_EXCL, 0600, &attr));
	mqd_t b = opened("open existing, bad attr ignored", mq_open(q, O_RDWR | O_CREAT, 0600, &bad));
	opened("open rdwr|wronly existing", mq_open(q, O_RDWR | O_WRONLY));
	opened("open rdwr|wronly creat existing", mq_open(q, O_RDWR | O_WRONLY | O_CREAT, 0600, NULL));
	opened("open rdwr|wronly missing", mq_open(name("acc3"), O_RDWR | O_WRONLY));
	mqd_t c = opened("open rdwr|wronly creat new",
			 mq_open(name("acc3"), O_RDWR | O_WRONLY | O_CREAT, 0600, &attr));
	if (c >= 0) {
		attributes("acc3 getattr", c);
		result("acc3 send", mq_send(c, "x", 1, 0));
		received("acc3 receive", c, 64, NULL);
		mq_close(c);
	}
	mq_unlink(name("acc3"));
	attributes("getattr", a);
	result("cloexec", fcntl(a, F_GETFD) & FD_CLOEXEC);
	mqd_t d = dup(a);
	attributes("getattr dup", d);
	close(d);
	mq_close(b);
	mq_close(a);
	result("close closed", mq_close(a));
	attributes("getattr closed", a);
	result("send closed", mq_send(a, "x", 1, 0));
	result("unlink", mq_unlink(q));
	int fds[2];
	if (pipe(fds) == 0) { /* not a queue: EBADF */
		result("send on a pipe", mq_send(fds[1], "x", 1, 0));
		received("receive on a pipe", fds[0], 64, NULL);
		attributes("getattr on a pipe", fds[0]);
		result("notify on a pipe", mq_notify(fds[0], NULL));
		close(fds[0]);
		close(fds[1]);
	}
}

static void traffic(void)
{
	struct mq_attr attr = {.mq_maxmsg = 4, .mq_msgsize = 64};
	const char *qn = name("traffic");
	mqd_t q = opened("create", mq_open(qn, O_RDWR | O_CREAT | O_EXCL, 0600, &attr));
	result("send a/1", mq_send(q, "a", 1, 1));
	result("send b/5", mq_send(q, "b", 1, 5));
	result("send c/1", mq_send(q, "c", 1, 1));
	result("send empty/0", mq_send(q, "", 0, 0));
	attributes("getattr full", q);
	struct pollfd p = {.fd = q, .events = POLLIN | POLLOUT};
	result("poll full", poll(&p, 1, 0));
	printf("revents %#x\n", p.revents);
	struct timespec soon = after_ms(50);
	result("timedsend full", mq_timedsend(q, "d", 1, 0, &soon));
	struct mq_attr nb = {.mq_flags = O_NONBLOCK}, old;
	result("setattr nonblock", mq_setattr(q, &nb, &old));
	printf("old flags %#lx curmsgs %ld\n", old.mq_flags, old.mq_curmsgs);
	attributes("getattr nonblock", q);
	result("send full nonblock", mq_send(q, "d", 1, 0));
	struct mq_attr junk = {.mq_flags = O_NONBLOCK | O_APPEND};
	result("setattr junk flags", mq_setattr(q, &junk, NULL));
	received("receive small buffer", q, 63, NULL);
	received("receive 1", q, 64, NULL);
	received("receive 2", q, 64, NULL);
	received("receive 3", q, 64, NULL);
	received("receive 4", q, 64, NULL);
	received("receive empty nonblock", q, 64, NULL);
	struct mq_attr block = {.mq_flags = 0};
	result("setattr block", mq_setattr(q, &block, &old));
	printf("old flags %#lx\n", old.mq_flags);
	char big[65] = {0};
	result("send 65 bytes", mq_send(q, big, 65, 0));
	result("send 64 bytes", mq_send(q, big, 64, 0));
	result("send prio 32768", mq_send(q, "p", 1, 32768));
	result("send prio 32767", mq_send(q, "p", 1, 32767));
	struct timespec invalid = {.tv_sec = 0, .tv_nsec = 1000000000};
	result("timedsend invalid timespec", mq_timedsend(q, "t", 1, 0, &invalid));
	struct timespec negative = {.tv_sec = -1, .tv_nsec = 0};
	result("timedsend negative timespec", mq_timedsend(q, "t", 1, 0, &negative));
	received("timedreceive invalid timespec", q, 64, &invalid);
	received("receive prio 32767", q, 64, NULL);
	received("receive 64 bytes", q, 64, NULL);
	soon = after_ms(50);
	received("timedreceive empty", q, 64, &soon);
	struct timespec past = {.tv_sec = 1, .tv_nsec = 0};
	received("timedreceive past deadline", q, 64, &past);
	mqd_t r = opened("open rdonly", mq_open(qn, O_RDONLY));
	mqd_t w = opened("open wronly", mq_open(qn, O_WRONLY | O_NONBLOCK));
	result("send on rdonly", mq_send(r, "x", 1, 0));
	received("receive on wronly", w, 64, NULL);
	attributes("getattr wronly nonblock", w);
	result("send on wronly", mq_send(w, "w", 1, 3));
	/* fork: the child sends on the inherited descriptor */
	pid_t child = fork();
	if (child == 0) {
		mq_send(w, "from child", 10, 7);
		_exit(0);
	}
	waitpid(child, NULL, 0);
	received("receive from child", r, 64, NULL);
	received("receive w", r, 64, NULL);
	mq_close(r);
	mq_close(w);
	mq_close(q);
	result("unlink", mq_unlink(qn));
	result("unlink again", mq_unlink(qn));
}

/* Open descriptors keep an unlinked queue alive; the name is free at once. */
static void unlinked(void)
{
	struct mq_attr attr = {.mq_maxmsg = 2, .mq_msgsize = 8};
	const char *qn = name("unlinked");
	mqd_t q = opened("create", mq_open(qn, O_RDWR | O_CREAT | O_EXCL, 0600, &attr));
	result("send", mq_send(q, "kept", 4, 0));
	result("unlink while open", mq_unlink(qn));
	opened("open unlinked", mq_open(qn, O_RDWR));
	received("receive after unlink", q, 8, NULL);
	mqd_t again = opened("create same name", mq_open(qn, O_RDWR | O_CREAT | O_EXCL, 0600, &attr));
	attributes("new queue", again);
	mq_close(again);
	mq_close(q);
	mq_unlink(qn);
}

static sem_t notified;
static union sigval thread_value;
static int thread_was_other;
static pthread_t main_thread;

/* A careful program retries an interrupted wait (no signal comes from SIGEV_THREAD, on
 * the kernel or under the shim: notify_thread.c checks that). */
static int wait_notified(struct timespec *limit)
{
	int result;
	do
		result = sem_timedwait(&notified, limit);
	while (result < 0 && errno == EINTR);
	return result;
}

static void on_notify(union sigval value)
{
	thread_value = value;
	thread_was_other = !pthread_equal(pthread_self(), main_thread);
	sem_post(&notified);
}

static void notify(void)
{
	struct mq_attr attr = {.mq_maxmsg = 2, .mq_msgsize = 8};
	const char *qn = name("notify");
	mqd_t q = opened("create", mq_open(qn, O_RDWR | O_CREAT | O_EXCL, 0600, &attr));
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1};
	sev.sigev_value.sival_int = 4242;
	result("notify signal", mq_notify(q, &sev));
	result("notify again", mq_notify(q, &sev));
	struct sigevent bad = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = 0};
	result("notify signo 0 busy", mq_notify(q, &bad));
	result("send", mq_send(q, "n", 1, 0));
	siginfo_t info;
	struct timespec wait = {.tv_sec = 5};
	int got = sigtimedwait(&usr1, &info, &wait);
	result("signal", got);
	printf("si_code SI_MESGQ %d value %d pid self %d\n", info.si_code == SI_MESGQ,
	       info.si_value.sival_int, info.si_pid == getpid());
	result("notify after firing", mq_notify(q, &sev));
	result("unregister", mq_notify(q, NULL));
	result("unregister none", mq_notify(q, NULL));
	result("notify", mq_notify(q, &sev));
	mqd_t other = opened("open other", mq_open(qn, O_RDWR));
	result("close other", mq_close(other));
	result("notify after close of other mqd", mq_notify(q, &sev));
	result("unregister", mq_notify(q, NULL));
	received("receive", q, 8, NULL);
	result("notify none", mq_notify(q, &(struct sigevent){.sigev_notify = SIGEV_NONE}));
	result("send", mq_send(q, "m", 1, 0));
	struct timespec brief = {.tv_nsec = 100000000};
	result("no signal for none", sigtimedwait(&usr1, &info, &brief));
	result("notify after none fired", mq_notify(q, &sev));
	result("unregister", mq_notify(q, NULL));
	received("receive", q, 8, NULL);
	result("notify invalid how", mq_notify(q, &(struct sigevent){.sigev_notify = 99}));
	result("notify invalid signo", mq_notify(q, &(struct sigevent){.sigev_notify = SIGEV_SIGNAL, .sigev_signo = 999}));

	sem_init(&notified, 0, 0);
	main_thread = pthread_self();
	struct sigevent th = {.sigev_notify = SIGEV_THREAD, .sigev_notify_function = on_notify};
	th.sigev_value.sival_int = 777;
	result("notify thread", mq_notify(q, &th));
	result("notify thread again", mq_notify(q, &th));
	result("send", mq_send(q, "t", 1, 0));
	struct timespec limit = after_ms(5000);
	result("thread ran", wait_notified(&limit));
	printf("thread value %d other thread %d\n", thread_value.sival_int, thread_was_other);
	result("notify thread after firing", mq_notify(q, &th));
	result("unregister", mq_notify(q, NULL));
	received("receive", q, 8, NULL);
	mq_close(q);
	mq_unlink(qn);
}

/* SIGEV_THREAD in the parent, then in a forked child on the inherited descriptor. Not part
 * of the side-by-side transcript: glibc 2.36's own SIGEV_THREAD (netlink) often never runs
 * the child's function (ETIMEDOUT), so the kernel side is unreliable. */
static void fork_thread(void)
{
	struct mq_attr attr = {.mq_maxmsg = 2, .mq_msgsize = 8};
	const char *qn = name("forkthread");
	mqd_t q = opened("create", mq_open(qn, O_RDWR | O_CREAT | O_EXCL, 0600, &attr));
	sem_init(&notified, 0, 0);
	main_thread = pthread_self();
	struct sigevent th = {.sigev_notify = SIGEV_THREAD, .sigev_notify_function = on_notify};
	th.sigev_value.sival_int = 777;
	result("notify thread", mq_notify(q, &th));
	result("send", mq_send(q, "t", 1, 0));
	struct timespec limit = after_ms(5000);
	result("thread ran", wait_notified(&limit));
	printf("thread value %d\n", thread_value.sival_int);
	received("receive", q, 8, NULL);
	/* a forked child registers on the inherited descriptor: its own thread runs */
	pid_t child = fork();
	if (child == 0) {
		th.sigev_value.sival_int = 888;
		result("child notify thread", mq_notify(q, &th));
		result("child send", mq_send(q, "c", 1, 0));
		limit = after_ms(5000);
		result("child thread ran", wait_notified(&limit));
		printf("child thread value %d\n", thread_value.sival_int);
		received("child receive", q, 8, NULL);
		_exit(0);
	}
	waitpid(child, NULL, 0);
	result("notify thread after child", mq_notify(q, &th));
	result("unregister", mq_notify(q, NULL));
	mq_close(q);
	mq_unlink(qn);
}

static volatile sig_atomic_t handled;
static void on_alarm(int signo)
{
	(void)signo;
	handled++;
}

static mqd_t late_queue;
static void *late_sender(void *arg)
{
	(void)arg;
	struct timespec pause = {.tv_nsec = 400000000};
	nanosleep(&pause, NULL);
	mq_send(late_queue, "late", 4, 2);
	return NULL;
}

static void interrupted(int restart)
{
	struct mq_attr attr = {.mq_maxmsg = 2, .mq_msgsize = 8};
	const char *qn = name(restart ? "restart" : "eintr");
	late_queue = opened("create", mq_open(qn, O_RDWR | O_CREAT | O_EXCL, 0600, &attr));
	struct sigaction action = {.sa_handler = on_alarm, .sa_flags = restart ? SA_RESTART : 0};
	sigaction(SIGALRM, &action, NULL);
	handled = 0;
	pthread_t sender;
	pthread_create(&sender, NULL, late_sender, NULL);
	/* SIGALRM at 100 ms, directed at this thread (the one blocked in mq_receive) */
	timer_t timer;
	struct sigevent sev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGALRM};
	sev._sigev_un._tid = gettid();
	timer_create(CLOCK_MONOTONIC, &sev, &timer);
	struct itimerspec when = {.it_value = {.tv_nsec = 100000000}};
	timer_settime(timer, 0, &when, NULL);
	received(restart ? "receive SA_RESTART" : "receive no SA_RESTART", late_queue, 8, NULL);
	printf("handler ran %d\n", (int)handled);
	pthread_join(sender, NULL);
	timer_delete(timer);
	if (!restart)
		received("receive late", late_queue, 8, NULL);
	signal(SIGALRM, SIG_DFL);
	mq_close(late_queue);
	mq_unlink(qn);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[2], "fork-thread") == 0) {
		prefix = argv[1];
		setvbuf(stdout, NULL, _IOLBF, 0);
		fork_thread();
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: %s PREFIX [fork-thread]\n", argv[0]);
		return 2;
	}
	prefix = argv[1];
	setvbuf(stdout, NULL, _IOLBF, 0);
	umask(022);
	printf("== names\n");
	names();
	printf("== open flags\n");
	open_flags();
	printf("== traffic\n");
	traffic();
	printf("== unlinked\n");
	unlinked();
	printf("== notify\n");
	notify();
	printf("== interrupted\n");
	interrupted(0);
	interrupted(1);
	return 0;
}
