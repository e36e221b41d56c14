/* notify.c - mq_notify. Every kind of registration is the daemon's NOTIFY ioctl as it is,
 * SIGEV_THREAD included, so the status line shows what the kernel's does (NOTIFY:2
 * SIGNO:0). For SIGEV_THREAD the kernel tells glibc's helper thread through a netlink
 * socket when the registration fires; the daemon tells whoever waits in its NOTIFY_WAIT
 * ioctl instead. So each SIGEV_THREAD registration gets a helper thread, every signal
 * blocked, which waits in NOTIFY_WAIT on a dup of the descriptor (made before mq_notify
 * returns: the program may close its own at once). When the registration fires the helper
 * closes the dup and starts a detached thread running the function with the value, as
 * glibc does; when it ends without firing (mq_notify(NULL), a close by the process, the
 * queue gone) the helper closes the dup and exits. No signal is involved, so nothing of
 * the program is interrupted, and every signal stays the program's.
 *
 * The dup's close is a FUSE flush, which the kernel's mqueue_flush_file would take for the
 * process closing the queue and so end its registration; the daemon knows the thread whose
 * NOTIFY_WAIT just returned and does not (mqfs/server/handles.py).
 *
 * Also here: mq_close, and the fork handlers (a child has no registrations and no helpers;
 * it closes its copies of the helpers' descriptors; lookup.c's init registers them).
 */
#include "shim.h"

/* One SIGEV_THREAD registration, from mq_notify until its helper is done with it. */
struct helper {
	struct helper *next;
	int fd;      /* the dup the helper waits on */
	uint32_t id; /* what the NOTIFY ioctl returned */
	void (*function)(union sigval);
	union sigval value;
	int has_attr; /* what of sigev_notify_attributes could be copied */
	size_t stacksize, guardsize;
	int inheritsched, schedpolicy, scope;
	struct sched_param schedparam;
};

/* The helpers that are running: the fork handlers need their descriptors. */
static pthread_mutex_t helpers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct helper *helpers;

static void unlink_helper_locked(struct helper *gone)
{
	for (struct helper **link = &helpers; *link != NULL; link = &(*link)->next) {
		if (*link == gone) {
			*link = gone->next;
			return;
		}
	}
}

static void *run_notification(void *arg)
{
	struct helper note = *(struct helper *)arg;
	free(arg);
	sigset_t all; /* glibc's notification thread unblocks every signal; so do we */
	sigfillset(&all);
	pthread_sigmask(SIG_UNBLOCK, &all, NULL);
	note.function(note.value);
	return NULL;
}

/* Runs note's function in a new detached thread with the attributes given; takes note. */
static void start_notification(struct helper *note)
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

/* The helper thread: waits for its registration to fire or end. EINTR (a stop and
 * continue: every other signal is blocked here) and EAGAIN (its user's blocked_max reached)
 * wait again; the daemon keeps the outcome until it is collected. Any other error (the
 * daemon stopping) ends the wait as an end would. */
static void *helper_main(void *arg)
{
	struct helper *self = arg;
	struct mqfs_notify_wait request;
	int result;
	for (;;) {
		memset(&request, 0, sizeof request);
		request.id = self->id;
		result = ioctl(self->fd, MQFS_IOC_NOTIFY_WAIT, &request);
		if (result >= 0 || (errno != EINTR && errno != EAGAIN))
			break;
		if (errno == EAGAIN) {
			struct timespec pause = {0, 10 * 1000 * 1000};
			nanosleep(&pause, NULL);
		}
	}
	/* Closed before the function runs, which may register again through another
	 * descriptor; under the lock, so a fork never copies a number that is being reused. */
	pthread_mutex_lock(&helpers_lock);
	unlink_helper_locked(self);
	close(self->fd);
	pthread_mutex_unlock(&helpers_lock);
	if (result >= 0 && request.outcome == MQFS_NOTIFY_FIRED)
		start_notification(self);
	else
		free(self);
	return NULL;
}

/* fork: the forking thread takes helpers_lock (the prepare handler, registered by init),
 * so no other thread is inside a critical section when the address space is copied; both
 * sides then unlock it. The child has the parent's helper list but none of its threads,
 * and the parent's registrations are not its own: it closes the helpers' descriptors. */
void before_fork(void) { pthread_mutex_lock(&helpers_lock); }
void after_fork_parent(void) { pthread_mutex_unlock(&helpers_lock); }
void after_fork_child(void)
{
	fast_after_fork_child();
	while (helpers != NULL) {
		struct helper *gone = helpers;
		helpers = gone->next;
		close(gone->fd);
		free(gone);
	}
	pthread_mutex_unlock(&helpers_lock); /* held by this thread since before_fork */
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

/* A SIGEV_THREAD registration's helper, not yet started: the function, the value and what
 * can be read back of the thread attributes (there is no public pthread_attr copy). */
static struct helper *new_helper(const struct sigevent *sev)
{
	struct helper *note = calloc(1, sizeof *note);
	if (note == NULL)
		return NULL;
	note->fd = -1;
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

/* Starts note's helper thread with every signal blocked (it never takes a signal meant
 * for the program). Called with helpers_lock held, note in the list. */
static int start_helper_locked(struct helper *note)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t thread;
	int failed = pthread_create(&thread, &attr, helper_main, note);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return failed ? fail(EAGAIN) : 0;
}

/* mq_notify(mqd, SIGEV_THREAD): the registration first (its errors are the kernel's:
 * EBUSY, EBADF...), then the dup and the helper; if those fail, the registration is
 * withdrawn and mq_notify fails (EMFILE, EAGAIN) as glibc's does when it cannot set up. */
static int notify_thread(mqd_t mqd, const struct sigevent *sev)
{
	struct helper *note = new_helper(sev);
	if (note == NULL)
		return fail(ENOMEM);
	int id = notify_ioctl(mqd, MQFS_NOTIFY_REGISTER, SIGEV_THREAD, 0,
			      (uint64_t)(uintptr_t)sev->sigev_value.sival_ptr);
	if (id <= 0) {
		int saved = id < 0 ? errno : EIO; /* 0: not mqfs's answer, nothing to wait for */
		free(note);
		if (id < 0 && (saved == ENOTTY || saved == EBADF)) /* see not_ours */
			return real.mq_notify(mqd, sev);
		return fail(saved);
	}
	note->id = (uint32_t)id;
	note->fd = real.fcntl(mqd, F_DUPFD_CLOEXEC, 0);
	int saved = errno;
	if (note->fd >= 0) {
		pthread_mutex_lock(&helpers_lock);
		note->next = helpers;
		helpers = note;
		if (start_helper_locked(note) == 0) {
			pthread_mutex_unlock(&helpers_lock);
			return 0;
		}
		saved = errno;
		unlink_helper_locked(note);
		pthread_mutex_unlock(&helpers_lock);
	}
	notify_ioctl(mqd, MQFS_NOTIFY_UNREGISTER, 0, 0, 0);
	if (note->fd >= 0)
		close(note->fd);
	free(note);
	return fail(saved);
}

EXPORT int mq_notify(mqd_t mqd, const struct sigevent *sev)
{
	if (!active())
		return real.mq_notify(mqd, sev);
	if (sev != NULL && sev->sigev_notify == SIGEV_THREAD)
		return notify_thread(mqd, sev);
	int result;
	if (sev == NULL) /* a SIGEV_THREAD helper learns of it from the daemon and exits */
		result = notify_ioctl(mqd, MQFS_NOTIFY_UNREGISTER, 0, 0, 0);
	else
		result = notify_ioctl(mqd, MQFS_NOTIFY_REGISTER, sev->sigev_notify, sev->sigev_signo,
				      (uint64_t)(uintptr_t)sev->sigev_value.sival_ptr);
	if (not_ours(result))
		return real.mq_notify(mqd, sev);
	return result;
}

EXPORT int mq_close(mqd_t mqd)
{
	if (!active())
		return real.mq_close(mqd);
	/* close(2), as glibc's mq_close: the daemon ends this process's registration on the
	 * queue (a SIGEV_THREAD helper then exits). */
	return close(mqd);
}
