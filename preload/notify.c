/* notify.c - mq_notify. SIGEV_NONE and SIGEV_SIGNAL are the daemon's NOTIFY ioctl as they
 * are. SIGEV_THREAD has no such thing in a daemon, so the shim builds it (shim.h,
 * "SIGEV_THREAD"): each registration gets a cookie and is sent as SIGEV_SIGNAL with the
 * shim's signal; the signal handler writes the cookie into a pipe, and a helper thread
 * reads it there and starts a detached thread running the function, as glibc does.
 *
 * Also here, because they keep that bookkeeping right: mq_close (which forgets the
 * descriptor's SIGEV_THREAD registration) and the fork handlers (a child starts with no
 * registrations and no helper; lookup.c's init registers them).
 */
#include "shim.h"

/* -- mq_notify and SIGEV_THREAD ------------------------------------------------------------ */

struct thread_note {
	struct thread_note *next;
	uint64_t cookie; /* the sigev_value the daemon sends back */
	int mqd;
	void (*function)(union sigval);
	union sigval value;
	int has_attr; /* what of sigev_notify_attributes could be copied */
	size_t stacksize, guardsize;
	int inheritsched, schedpolicy, scope;
	struct sched_param schedparam;
};

static pthread_mutex_t notes_lock = PTHREAD_MUTEX_INITIALIZER;
static struct thread_note *notes;
static uint64_t next_cookie = 1;
static int notify_pipe[2] = {-1, -1};
static int notify_signo;
static int handler_installed;
static pid_t helper_pid; /* the process the helper thread runs in (0: none yet) */

/* Wake-ups the handler could not pass on because the pipe was full (the helper thread
 * stalled): those SIGEV_THREAD notifications are lost. MQFS_PRELOAD_DEBUG prints the count
 * at exit. Lock-free, so the handler may update it. */
static unsigned long dropped_wakeups;

static void notify_handler(int signo, siginfo_t *info, void *context)
{
	(void)signo;
	(void)context;
	int saved = errno;
	if (info->si_code == SI_MESGQ) {
		own_signals = own_signals + 1;
		uint64_t cookie = (uint64_t)(uintptr_t)info->si_value.sival_ptr;
		/* The write end is O_NONBLOCK: a stalled helper must never block the handler (and
		 * with it whatever thread the signal interrupted). 8 bytes < PIPE_BUF: all or
		 * nothing. Until a pipe exists this is EBADF: nothing was registered. */
		int fd = __atomic_load_n(&notify_pipe[1], __ATOMIC_ACQUIRE);
		if (write(fd, &cookie, sizeof cookie) < 0 && errno == EAGAIN)
			__atomic_fetch_add(&dropped_wakeups, 1, __ATOMIC_RELAXED);
	}
	errno = saved;
}

__attribute__((destructor)) static void report_at_exit(void)
{
	if (debug_enabled)
		fprintf(stderr, "mqfs-preload: %lu SIGEV_THREAD wake-ups dropped (notify pipe full)\n",
			__atomic_load_n(&dropped_wakeups, __ATOMIC_RELAXED));
}

static struct thread_note *take_note_locked(uint64_t cookie)
{
	for (struct thread_note **link = &notes; *link != NULL; link = &(*link)->next) {
		if ((*link)->cookie == cookie) {
			struct thread_note *found = *link;
			*link = found->next;
			return found;
		}
	}
	return NULL;
}

/* Forgets mqd's registrations but the one with cookie `keep` (0: all; cookies start at 1). */
static void drop_notes_locked(int mqd, uint64_t keep)
{
	struct thread_note **link = &notes;
	while (*link != NULL) {
		if ((*link)->mqd == mqd && (*link)->cookie != keep) {
			struct thread_note *gone = *link;
			*link = gone->next;
			free(gone);
		} else {
			link = &(*link)->next;
		}
	}
}

static void *run_notification(void *arg)
{
	struct thread_note note = *(struct thread_note *)arg;
	free(arg);
	sigset_t all; /* glibc's notification thread unblocks every signal; so do we */
	sigfillset(&all);
	pthread_sigmask(SIG_UNBLOCK, &all, NULL);
	note.function(note.value);
	return NULL;
}

static void start_notification(struct thread_note *note)
{
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (note->has_attr) {
		pthread_attr_setstacksize(&attr, note->stacksize);
		pthread_attr_setguardsize(&attr, note->guardsize);
		pthread_attr_setinheritsched(&attr, note->inheritsched);
		pthread_attr_setschedpolicy(&attr, note->schedpolicy);
		pthread_attr_setschedparam(&attr, &note->schedparam);
		pthread_attr_setscope(&attr, note->scope);
	}
	pthread_t thread;
	if (pthread_create(&thread, &attr, run_notification, note) != 0)
		free(note); /* glibc drops the notification too when it cannot make the thread */
	pthread_attr_destroy(&attr);
}

/* The helper thread: turns cookies from the signal handler into notification threads. */
static void *notify_helper(void *arg)
{
	int fd = (int)(intptr_t)arg;
	for (;;) {
		uint64_t cookie;
		ssize_t got = read(fd, &cookie, sizeof cookie);
		if (got < 0 && errno == EINTR)
			continue;
		if (got != (ssize_t)sizeof cookie)
			return NULL;
		pthread_mutex_lock(&notes_lock);
		struct thread_note *note = take_note_locked(cookie);
		pthread_mutex_unlock(&notes_lock);
		if (note != NULL)
			start_notification(note);
	}
}

/* fork: the forking thread takes notes_lock (the prepare handler, registered by init), so
 * no other thread is inside a critical section when the address space is copied; both
 * sides then unlock it. A forked child has the parent's list and pipe but no helper thread,
 * and the parent's registrations are not its own: it starts afresh. */
void before_fork(void) { pthread_mutex_lock(&notes_lock); }
void after_fork_parent(void) { pthread_mutex_unlock(&notes_lock); }
void after_fork_child(void)
{
	while (notes != NULL) {
		struct thread_note *gone = notes;
		notes = gone->next;
		free(gone);
	}
	/* The pipe is shared with the parent, whose helper would steal the child's cookies: the
	 * next SIGEV_THREAD registration makes a new pipe and helper. The handler stays. */
	int old_read = notify_pipe[0], old_write = notify_pipe[1];
	__atomic_store_n(&notify_pipe[1], -1, __ATOMIC_RELEASE);
	notify_pipe[0] = -1;
	if (old_read >= 0)
		close(old_read);
	if (old_write >= 0)
		close(old_write);
	helper_pid = 0;
	pthread_mutex_unlock(&notes_lock); /* held by this thread since before_fork */
}

/* The helper's pipe: a blocking read end (the helper waits on it) and a non-blocking
 * write end (the signal handler's). Published only when complete. */
static int make_notify_pipe(void)
{
	int ends[2];
	if (pipe2(ends, O_CLOEXEC) != 0)
		return -1;
	int flags = real.fcntl(ends[1], F_GETFL);
	if (flags < 0 || real.fcntl(ends[1], F_SETFL, flags | O_NONBLOCK) < 0) {
		int saved = errno;
		close(ends[0]);
		close(ends[1]);
		return fail(saved);
	}
	notify_pipe[0] = ends[0];
	__atomic_store_n(&notify_pipe[1], ends[1], __ATOMIC_RELEASE);
	return 0;
}

/* Called with notes_lock held. */
static int start_helper_locked(void)
{
	if (helper_pid == getpid())
		return 0;
	if (!handler_installed) {
		const char *chosen = getenv("MQFS_NOTIFY_SIGNAL");
		notify_signo = chosen != NULL && chosen[0] ? atoi(chosen) : SIGRTMAX;
		if (notify_signo <= 0 || notify_signo >= NSIG)
			return fail(ENOSYS);
		struct sigaction current;
		if (sigaction(notify_signo, NULL, &current) != 0)
			return fail(ENOSYS);
		if (current.sa_handler != SIG_DFL) /* the program uses that signal itself */
			return fail(ENOSYS);
		struct sigaction action;
		memset(&action, 0, sizeof action);
		action.sa_sigaction = notify_handler;
		action.sa_flags = SA_SIGINFO | SA_RESTART;
		sigfillset(&action.sa_mask);
		if (sigaction(notify_signo, &action, NULL) != 0)
			return -1;
		handler_installed = 1;
	}
	if (notify_pipe[0] < 0 && make_notify_pipe() < 0)
		return -1;
	/* The helper runs with every signal blocked, so it never takes the handler itself. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t thread;
	int failed = pthread_create(&thread, &attr, notify_helper, (void *)(intptr_t)notify_pipe[0]);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (failed)
		return fail(EAGAIN);
	helper_pid = getpid();
	return 0;
}

static int notify_ioctl(mqd_t mqd, uint32_t action, int how, int signo, uint64_t value)
{
	struct mqfs_notify request;
	memset(&request, 0, sizeof request);
	request.action = action;
	request.sigev_notify = how;
	request.sigev_signo = signo;
	request.sigev_value = value;
	return ioctl(mqd, MQFS_IOC_NOTIFY, &request);
}

/* A SIGEV_THREAD registration through mqd, not yet in the list: the function, the value and
 * what can be read back of the thread attributes (there is no public pthread_attr copy). */
static struct thread_note *new_note(mqd_t mqd, const struct sigevent *sev)
{
	struct thread_note *note = calloc(1, sizeof *note);
	if (note == NULL)
		return NULL;
	note->mqd = mqd;
	note->function = sev->sigev_notify_function;
	note->value = sev->sigev_value;
	pthread_attr_t *attr = sev->sigev_notify_attributes;
	if (attr == NULL)
		return note;
	note->has_attr = 1;
	pthread_attr_getstacksize(attr, &note->stacksize);
	pthread_attr_getguardsize(attr, &note->guardsize);
	pthread_attr_getinheritsched(attr, &note->inheritsched);
	pthread_attr_getschedpolicy(attr, &note->schedpolicy);
	pthread_attr_getschedparam(attr, &note->schedparam);
	pthread_attr_getscope(attr, &note->scope);
	return note;
}

/* Gives note a cookie and puts it in the list, after starting this process's helper thread
 * if it has none; if that fails, note is freed and errno says why. The entry goes in
 * before the registration, as the signal can come at once: from here the helper may take
 * and free note, so only the cookie is used. */
static int add_note(struct thread_note *note, uint64_t *cookie)
{
	pthread_mutex_lock(&notes_lock);
	if (start_helper_locked() < 0) {
		int saved = errno;
		pthread_mutex_unlock(&notes_lock);
		free(note);
		return fail(saved);
	}
	*cookie = note->cookie = next_cookie++;
	note->next = notes;
	notes = note;
	pthread_mutex_unlock(&notes_lock);
	return 0;
}

/* Takes the note with that cookie out of the list, if the helper has not already. */
static void forget_note(uint64_t cookie)
{
	pthread_mutex_lock(&notes_lock);
	struct thread_note *mine = take_note_locked(cookie);
	pthread_mutex_unlock(&notes_lock);
	free(mine);
}

/* mq_notify(mqd, SIGEV_THREAD): the daemon is asked for SIGEV_SIGNAL with notify_signo and
 * a new cookie as the value, which the handler and the helper turn into the thread. */
static int notify_thread(mqd_t mqd, const struct sigevent *sev)
{
	struct thread_note *note = new_note(mqd, sev);
	if (note == NULL)
		return fail(ENOMEM);
	uint64_t cookie;
	if (add_note(note, &cookie) < 0)
		return -1;
	int result = notify_ioctl(mqd, MQFS_NOTIFY_REGISTER, SIGEV_SIGNAL, notify_signo, cookie);
	if (result < 0) {
		int saved = errno;
		forget_note(cookie);
		if (saved == ENOTTY || saved == EBADF) /* see not_ours */
			return real.mq_notify(mqd, sev);
		return fail(saved);
	}
	/* mqfs answers 0: a former registration through this mqd is certainly over. (Any other
	 * success is some other filesystem's, and changes nothing here.) */
	if (result == 0) {
		pthread_mutex_lock(&notes_lock);
		drop_notes_locked(mqd, cookie);
		pthread_mutex_unlock(&notes_lock);
	}
	return 0;
}

EXPORT int mq_notify(mqd_t mqd, const struct sigevent *sev)
{
	if (!active())
		return real.mq_notify(mqd, sev);
	if (sev != NULL && sev->sigev_notify == SIGEV_THREAD)
		return notify_thread(mqd, sev);
	int result;
	if (sev == NULL) {
		result = notify_ioctl(mqd, MQFS_NOTIFY_UNREGISTER, 0, 0, 0);
		if (result == 0) {
			pthread_mutex_lock(&notes_lock);
			drop_notes_locked(mqd, 0);
			pthread_mutex_unlock(&notes_lock);
		}
	} else {
		result = notify_ioctl(mqd, MQFS_NOTIFY_REGISTER, sev->sigev_notify, sev->sigev_signo,
				      (uint64_t)(uintptr_t)sev->sigev_value.sival_ptr);
	}
	if (not_ours(result))
		return real.mq_notify(mqd, sev);
	return result;
}

EXPORT int mq_close(mqd_t mqd)
{
	if (!active())
		return real.mq_close(mqd);
	/* close(2), as glibc's mq_close; the daemon ends this process's registration on the
	 * queue, so forget the matching SIGEV_THREAD cookie. */
	pthread_mutex_lock(&notes_lock);
	drop_notes_locked(mqd, 0);
	pthread_mutex_unlock(&notes_lock);
	return close(mqd);
}
