/* mqfs_preload.c - run unmodified programs' POSIX message queues on an mqfs mount.
 *
 *   LD_PRELOAD=libmqfs-preload.so MQFS_MOUNT=/run/mqfs ./program
 *
 * Interposes glibc's mq_* calls. With MQFS_MOUNT set (non-empty), mq_open("/name") becomes
 * the CREATE ioctl on the mount's root plus open(MNT/name/queue), and the returned mqd_t is
 * that real file descriptor: fork, dup, close, poll/select/epoll and FD_CLOEXEC behave as
 * with the kernel's mqd_t. Send/receive/getattr/setattr/notify are the mqfs ioctls of
 * include/mqfs.h. Without MQFS_MOUNT every call goes straight to glibc (dlsym RTLD_NEXT).
 *
 * A descriptor that is not an mqfs queue (the ioctl says ENOTTY) is handed to glibc too, so
 * mq_send on a pipe still gets the kernel's EBADF.
 *
 * Behaviour the shim chooses (see README, "LD_PRELOAD"):
 *  - EINTR: a blocked FUSE request interrupted by a signal fails with EINTR whatever
 *    SA_RESTART says. The kernel restarts mq_(timed)send/receive when the handler has
 *    SA_RESTART. The shim cannot learn which signal interrupted it, so it restarts only when
 *    that is certainly right: when every caught signal of the process has SA_RESTART (or
 *    the interrupting signal was the shim's own notification signal). Otherwise EINTR.
 *    A restart keeps the absolute deadline, so timed calls still end on time.
 *  - SIGEV_THREAD: registered with the daemon as SIGEV_SIGNAL with the shim's signal
 *    (MQFS_NOTIFY_SIGNAL, default SIGRTMAX) and a cookie; the shim's handler passes the
 *    cookie to a helper thread, which starts a detached thread running the function with
 *    the value, as glibc does. The status line therefore shows NOTIFY:0 SIGNO:<that signal>.
 *    The handler never blocks: if the helper thread falls a full pipe behind (8192
 *    wake-ups by default), further ones are dropped; MQFS_PRELOAD_DEBUG=1 prints how many
 *    at exit.
 *  - Replies are not trusted: MQFS_MOUNT may be any FUSE filesystem, so a RECEIVE or PEEK
 *    reply whose lengths do not fit the request, the message or the buffer gives EIO.
 *
 * The two proposed peek APIs of include/mqfs/peek.h run here too (README, "Developing
 * against the proposed peek APIs"): fcntl/fcntl64(mqd, F_MQ_PEEK, &attr) on an mqfs queue,
 * and syscall(548, ...) = mq_timedreceive2 on an mqfs queue (the number can be changed with
 * MQFS_MQ_TIMEDRECEIVE2_NR). Every other fcntl command and syscall number, and both on any
 * other descriptor, go to glibc unchanged - so today's kernel answers EINVAL / ENOSYS.
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE /* we define __mq_open_2 and mq_open ourselves */

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mqueue.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mqfs.h"
#include "mqfs/peek.h"

#define EXPORT __attribute__((visibility("default")))
#define NAME_MAX_MQ 255
#define FIRST_CHUNK 1024 /* as mqfs/client.py: ask small first, fetch the rest by xfer_id */

mqd_t __mq_open_2(const char *name, int oflag);

/* -- the real functions and the mount, looked up once ------------------------------------ */

static struct {
	mqd_t (*mq_open)(const char *, int, ...);
	mqd_t (*mq_open_2)(const char *, int);
	int (*mq_close)(mqd_t);
	int (*mq_unlink)(const char *);
	int (*mq_timedsend)(mqd_t, const char *, size_t, unsigned, const struct timespec *);
	ssize_t (*mq_timedreceive)(mqd_t, char *, size_t, unsigned *, const struct timespec *);
	int (*mq_getattr)(mqd_t, struct mq_attr *);
	int (*mq_setattr)(mqd_t, const struct mq_attr *, struct mq_attr *);
	int (*mq_notify)(mqd_t, const struct sigevent *);
	int (*fcntl)(int, int, ...);
	int (*fcntl64)(int, int, ...);
	long (*syscall)(long, ...);
} real;

static long timedreceive2_nr = __NR_mq_timedreceive2; /* MQFS_MQ_TIMEDRECEIVE2_NR */

static char mount_path[PATH_MAX - NAME_MAX_MQ - 16]; /* "" = pass everything to glibc */
static int debug_enabled; /* MQFS_PRELOAD_DEBUG: report dropped wake-ups at exit */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
/* 1 once init() has finished: real.* and mount_path are set and never change again. */
static int ready;

static void *lookup(const char *symbol)
{
	void *found = dlsym(RTLD_NEXT, symbol);
	if (found == NULL) { /* glibc always has these; say so rather than crash later */
		fprintf(stderr, "mqfs-preload: %s not found: %s\n", symbol, dlerror());
		abort();
	}
	return found;
}

static void before_fork(void);
static void after_fork_parent(void);
static void after_fork_child(void);

static void init(void)
{
	real.mq_open = (__typeof__(real.mq_open))lookup("mq_open");
	real.mq_open_2 = (__typeof__(real.mq_open_2))lookup("__mq_open_2");
	real.mq_close = (__typeof__(real.mq_close))lookup("mq_close");
	real.mq_unlink = (__typeof__(real.mq_unlink))lookup("mq_unlink");
	real.mq_timedsend = (__typeof__(real.mq_timedsend))lookup("mq_timedsend");
	real.mq_timedreceive = (__typeof__(real.mq_timedreceive))lookup("mq_timedreceive");
	real.mq_getattr = (__typeof__(real.mq_getattr))lookup("mq_getattr");
	real.mq_setattr = (__typeof__(real.mq_setattr))lookup("mq_setattr");
	real.mq_notify = (__typeof__(real.mq_notify))lookup("mq_notify");
	real.fcntl = (__typeof__(real.fcntl))lookup("fcntl");
	real.fcntl64 = (__typeof__(real.fcntl64))lookup("fcntl64");
	real.syscall = (__typeof__(real.syscall))lookup("syscall");
	const char *number = getenv("MQFS_MQ_TIMEDRECEIVE2_NR");
	if (number != NULL && number[0] != '\0') {
		char *end;
		long parsed = strtol(number, &end, 0);
		if (*end == '\0' && parsed >= 0)
			timedreceive2_nr = parsed;
		else
			fprintf(stderr, "mqfs-preload: MQFS_MQ_TIMEDRECEIVE2_NR=%s is not a syscall "
				"number; using %ld\n", number, timedreceive2_nr);
	}
	const char *debug = getenv("MQFS_PRELOAD_DEBUG");
	debug_enabled = debug != NULL && debug[0] != '\0' && strcmp(debug, "0") != 0;
	/* Read once: getenv is not safe against a concurrent setenv in another thread. */
	const char *mount = getenv("MQFS_MOUNT");
	if (mount != NULL && mount[0] != '\0' && strlen(mount) < sizeof mount_path) {
		strcpy(mount_path, mount);
		size_t len = strlen(mount_path);
		while (len > 1 && mount_path[len - 1] == '/')
			mount_path[--len] = '\0';
	} else if (mount != NULL && mount[0] != '\0') {
		fprintf(stderr, "mqfs-preload: MQFS_MOUNT is too long; using the kernel's queues\n");
	}
	/* Registered here, once and outside notes_lock: pthread_atfork takes glibc's atfork
	 * lock, which a concurrent fork holds while its prepare handlers wait for notes_lock. */
	if (mount_path[0] != '\0')
		pthread_atfork(before_fork, after_fork_parent, after_fork_child);
	__atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
}

/* Everything is looked up when the library is loaded, so the interposed fcntl and syscall
 * never need pthread_once (which a call made from inside init, e.g. by an allocator that
 * uses syscall(), would deadlock on). */
__attribute__((constructor)) static void init_at_load(void)
{
	pthread_once(&init_once, init);
}

static int active(void)
{
	/* Only an mq_* call made before our constructor (from another library's) gets here
	 * unready; fcntl and syscall never come here unready. */
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE))
		pthread_once(&init_once, init);
	return mount_path[0] != '\0';
}

/* glibc's `symbol` for fcntl/fcntl64/syscall called before the constructor ran (or from
 * inside init itself): looked up on the spot, without pthread_once; the race is benign. */
static void *early_lookup(void **cache, const char *symbol)
{
	void *found = __atomic_load_n(cache, __ATOMIC_RELAXED);
	if (found == NULL) {
		found = lookup(symbol);
		__atomic_store_n(cache, found, __ATOMIC_RELAXED);
	}
	return found;
}

static int fail(int code)
{
	errno = code;
	return -1;
}

/* -- EINTR and SA_RESTART ------------------------------------------------------------------ */

/* Counts the shim's own notification signals handled by this thread: if one arrived during
 * a blocked call, that call is restarted (the kernel's netlink SIGEV_THREAD never interrupts
 * anything). initial-exec: the handler must not trigger a lazy TLS allocation. */
static __thread volatile sig_atomic_t own_signals __attribute__((tls_model("initial-exec")));

/* Whether the kernel would surely have restarted the interrupted call: every caught signal
 * has SA_RESTART. Uncaught ones that do not kill (SIGSTOP/SIGCONT...) restart in the kernel. */
static int restart_is_safe(void)
{
	for (int signo = 1; signo < NSIG; signo++) {
		struct sigaction current;
		if (signo == SIGKILL || signo == SIGSTOP || sigaction(signo, NULL, &current) != 0)
			continue; /* glibc's internal signals give EINVAL: never user handlers */
		if (current.sa_handler == SIG_DFL || current.sa_handler == SIG_IGN)
			continue;
		if (!(current.sa_flags & SA_RESTART))
			return 0;
	}
	return 1;
}

/* An ioctl that may block in the daemon: EINTR is retried where the kernel would restart. */
static int blocking_ioctl(int fd, unsigned long cmd, void *arg)
{
	for (;;) {
		sig_atomic_t seen = own_signals;
		int result = ioctl(fd, cmd, arg);
		if (result >= 0 || errno != EINTR)
			return result;
		if (own_signals == seen && !restart_is_safe())
			return result;
	}
}

/* -- names and mq_open ------------------------------------------------------------------- */

/* glibc's check (a leading slash) and then the kernel's, as mqfs/names.py. */
static const char *bare_name(const char *name)
{
	if (name[0] != '/') {
		errno = EINVAL;
		return NULL;
	}
	const char *bare = name + 1;
	size_t len = strlen(bare);
	if (len > NAME_MAX_MQ)
		errno = ENAMETOOLONG;
	else if (len == 0)
		errno = ENOENT;
	else if (strchr(bare, '/') != NULL || strcmp(bare, ".") == 0 || strcmp(bare, "..") == 0)
		errno = EACCES;
	else
		return bare;
	return NULL;
}

static void queue_path(char *out, size_t size, const char *bare, const char *leaf)
{
	snprintf(out, size, "%s/%s%s%s", mount_path, bare, leaf[0] ? "/" : "", leaf);
}

/* The umask without changing it: umask(0)+umask(old) would race with other threads'
 * file creation. /proc/self/status has "Umask:" since Linux 4.7. */
static mode_t current_umask(void)
{
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		char buffer[4096];
		ssize_t got = read(fd, buffer, sizeof buffer - 1);
		close(fd);
		if (got > 0) {
			buffer[got] = '\0';
			char *line = strstr(buffer, "\nUmask:");
			if (line != NULL)
				return (mode_t)strtoul(line + 7, NULL, 8);
		}
	}
	mode_t mask = umask(0);
	umask(mask);
	return mask;
}

static int create_queue(const char *bare, int exclusive, mode_t mode, const struct mq_attr *attr)
{
	struct mqfs_create request;
	memset(&request, 0, sizeof request);
	strcpy(request.name, bare); /* bare_name checked: at most 255 bytes */
	request.mode = (uint32_t)(mode & 07777 & ~current_umask());
	request.flags = exclusive ? MQFS_CREATE_EXCL : 0;
	if (attr != NULL) {
		request.flags |= MQFS_CREATE_ATTR;
		request.maxmsg = attr->mq_maxmsg;
		request.msgsize = attr->mq_msgsize;
	}
	int root = open(mount_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return -1;
	int result = ioctl(root, MQFS_IOC_CREATE, &request);
	int saved = errno;
	close(root);
	errno = saved;
	return result < 0 ? -1 : 0;
}

static mqd_t shim_open(const char *name, int oflag, mode_t mode, const struct mq_attr *attr)
{
	const char *bare = bare_name(name);
	if (bare == NULL)
		return -1;
	char path[PATH_MAX];
	queue_path(path, sizeof path, bare, "queue");
	if ((oflag & O_ACCMODE) == O_ACCMODE) {
		/* The kernel's prepare_open: O_RDWR|O_WRONLY is EINVAL on an existing queue (after
		 * O_CREAT|O_EXCL's EEXIST), but a new queue is made and opened with access mode 3. */
		if (!(oflag & O_CREAT)) {
			struct stat st;
			if (stat(path, &st) < 0)
				return -1; /* ENOENT first */
			return fail(EINVAL);
		}
		if (create_queue(bare, 1, mode, attr) < 0) {
			if (errno == EEXIST && !(oflag & O_EXCL))
				errno = EINVAL;
			return -1;
		}
	} else if (oflag & O_CREAT) {
		if (create_queue(bare, oflag & O_EXCL, mode, attr) < 0)
			return -1;
	}
	/* Only what mq_open means reaches open(2): O_CREAT/O_EXCL were the CREATE ioctl's, and
	 * O_TRUNC, O_DIRECTORY, O_PATH... mean nothing to the kernel's mq_open. Its mqd_t is
	 * always close-on-exec. */
	return open(path, (oflag & (O_ACCMODE | O_NONBLOCK)) | O_CLOEXEC);
}

EXPORT mqd_t mq_open(const char *name, int oflag, ...)
{
	mode_t mode = 0;
	struct mq_attr *attr = NULL;
	if (oflag & O_CREAT) {
		va_list ap;
		va_start(ap, oflag);
		mode = va_arg(ap, mode_t);
		attr = va_arg(ap, struct mq_attr *);
		va_end(ap);
	}
	if (!active())
		return real.mq_open(name, oflag, mode, attr);
	return shim_open(name, oflag, mode, attr);
}

/* The _FORTIFY_SOURCE entry for mq_open(name, oflag) with two arguments. */
EXPORT mqd_t __mq_open_2(const char *name, int oflag)
{
	if (!active() || (oflag & O_CREAT)) /* glibc's own fortify failure for O_CREAT */
		return real.mq_open_2(name, oflag);
	return shim_open(name, oflag, 0, NULL);
}

EXPORT int mq_unlink(const char *name)
{
	if (!active())
		return real.mq_unlink(name);
	const char *bare = bare_name(name);
	if (bare == NULL)
		return -1;
	char path[PATH_MAX];
	queue_path(path, sizeof path, bare, "");
	int result = rmdir(path);
	if (result < 0 && errno == EPERM) /* as glibc's mq_unlink */
		errno = EACCES;
	return result;
}

/* -- send and receive ---------------------------------------------------------------------- */

static void set_deadline(struct mqfs_xfer *x, const struct timespec *deadline)
{
	if (deadline != NULL) { /* passed unchecked: the daemon gives the kernel's EINVAL */
		x->flags = MQFS_XFER_TIMED;
		x->tv_sec = deadline->tv_sec;
		x->tv_nsec = deadline->tv_nsec;
	}
}

/* Whether a reply's chunk is possible: `chunk` bytes from `offset` of a `length`-byte
 * message, for a request of at most `asked` bytes. MQFS_MOUNT may be any FUSE filesystem,
 * so no length or offset from a reply is used (to copy, or to size a copy) before this
 * says yes; the callers treat no as EIO. The chunk then fits the ioctl buffer (sized for
 * `asked`) and, as length <= the caller's room, the caller's buffer. */
static int chunk_fits(uint64_t length, uint64_t offset, uint64_t chunk, size_t asked)
{
	return chunk <= asked && offset <= length && chunk <= length - offset;
}

/* 1: the descriptor is not an mqfs queue; the caller hands the call to glibc. */
static int not_ours(int result)
{
	return result < 0 && errno == ENOTTY;
}

/* Whole-message atomic send in chunks (mqfs/client.py's send). The message enters the queue
 * when the last chunk arrives, and that call is the one that blocks; an interrupted last
 * chunk ends the transfer in the daemon, so a restart starts it again from the beginning. */
static int shim_send(mqd_t mqd, const char *msg, size_t len, unsigned prio,
		     const struct timespec *deadline)
{
	size_t capacity = len < MQFS_CHUNK ? len : MQFS_CHUNK;
	struct mqfs_xfer *x = malloc(MQFS_XFER_HEADER_SIZE + capacity);
	if (x == NULL)
		return fail(ENOMEM);
	int result;
restart:;
	size_t offset = 0;
	uint64_t transfer = 0;
	do {
		size_t chunk = len - offset < MQFS_CHUNK ? len - offset : MQFS_CHUNK;
		memset(x, 0, MQFS_XFER_HEADER_SIZE);
		x->msg_len = len;
		x->offset = offset;
		x->xfer_id = transfer;
		x->msg_prio = prio;
		x->chunk_len = (uint32_t)chunk;
		set_deadline(x, deadline);
		memcpy(x->data, msg + offset, chunk);
		unsigned long cmd = MQFS_IOC_SIZED(MQFS_IOC_SEND, MQFS_XFER_HEADER_SIZE + chunk);
		sig_atomic_t seen = own_signals;
		result = ioctl(mqd, cmd, x);
		if (result < 0) {
			if (offset == 0 && not_ours(result)) {
				free(x);
				return real.mq_timedsend(mqd, msg, len, prio, deadline);
			}
			if (errno == EINTR && (own_signals != seen || restart_is_safe()))
				goto restart;
			break;
		}
		offset += chunk;
		transfer = x->xfer_id;
	} while (offset < len);
	int saved = errno;
	free(x);
	errno = saved;
	return result < 0 ? -1 : 0;
}

static ssize_t shim_receive(mqd_t mqd, char *buffer, size_t buflen, unsigned *prio,
			    const struct timespec *deadline)
{
	size_t capacity = buflen < FIRST_CHUNK ? (buflen ? buflen : 1) : FIRST_CHUNK;
	size_t most = buflen < MQFS_CHUNK ? (buflen ? buflen : 1) : MQFS_CHUNK;
	struct mqfs_xfer *x = malloc(MQFS_XFER_HEADER_SIZE + most);
	if (x == NULL)
		return fail(ENOMEM);
	memset(x, 0, MQFS_XFER_HEADER_SIZE);
	x->msg_len = buflen;
	set_deadline(x, deadline);
	unsigned long cmd = MQFS_IOC_SIZED(MQFS_IOC_RECEIVE, MQFS_XFER_HEADER_SIZE + capacity);
	if (blocking_ioctl(mqd, cmd, x) < 0) {
		int saved = errno;
		free(x);
		if (saved == ENOTTY) /* not an mqfs queue */
			return real.mq_timedreceive(mqd, buffer, buflen, prio, deadline);
		errno = saved;
		return -1;
	}
	/* From here the message is ours: the rest is parked in the daemon under xfer_id. Every
	 * length in a reply is checked against what was asked and what was allocated first. */
	uint64_t length = x->msg_len, transfer = x->xfer_id;
	unsigned priority = x->msg_prio;
	size_t received = x->chunk_len;
	if (length > buflen || length > SSIZE_MAX || /* the daemon gives EMSGSIZE for those */
	    !chunk_fits(length, 0, x->chunk_len, capacity) ||
	    (received < length && transfer == 0)) /* a second xfer_id 0 call would receive anew */
		goto bad_reply;
	memcpy(buffer, x->data, received);
	while (received < length) {
		size_t want = length - received < MQFS_CHUNK ? length - received : MQFS_CHUNK;
		memset(x, 0, MQFS_XFER_HEADER_SIZE);
		x->msg_len = buflen;
		x->offset = received;
		x->xfer_id = transfer;
		cmd = MQFS_IOC_SIZED(MQFS_IOC_RECEIVE, MQFS_XFER_HEADER_SIZE + want);
		int result;
		do /* never blocks in the daemon; retry any EINTR rather than lose the message */
			result = ioctl(mqd, cmd, x);
		while (result < 0 && errno == EINTR);
		if (result < 0) {
			int saved = errno;
			free(x);
			return fail(saved);
		}
		if (x->msg_len != length || x->chunk_len == 0 ||
		    !chunk_fits(length, received, x->chunk_len, want))
			goto bad_reply;
		memcpy(buffer + received, x->data, x->chunk_len);
		received += x->chunk_len;
	}
	free(x);
	if (prio != NULL)
		*prio = priority;
	return (ssize_t)received;
bad_reply: /* not mqfs's protocol: the message is lost, and nothing was overrun */
	free(x);
	return fail(EIO);
}

EXPORT int mq_timedsend(mqd_t mqd, const char *msg, size_t len, unsigned prio,
			const struct timespec *deadline)
{
	if (!active())
		return real.mq_timedsend(mqd, msg, len, prio, deadline);
	return shim_send(mqd, msg, len, prio, deadline);
}

EXPORT int mq_send(mqd_t mqd, const char *msg, size_t len, unsigned prio)
{
	if (!active())
		return real.mq_timedsend(mqd, msg, len, prio, NULL);
	return shim_send(mqd, msg, len, prio, NULL);
}

EXPORT ssize_t mq_timedreceive(mqd_t mqd, char *buffer, size_t len, unsigned *prio,
			       const struct timespec *deadline)
{
	if (!active())
		return real.mq_timedreceive(mqd, buffer, len, prio, deadline);
	return shim_receive(mqd, buffer, len, prio, deadline);
}

EXPORT ssize_t mq_receive(mqd_t mqd, char *buffer, size_t len, unsigned *prio)
{
	if (!active())
		return real.mq_timedreceive(mqd, buffer, len, prio, NULL);
	return shim_receive(mqd, buffer, len, prio, NULL);
}

/* -- attributes ---------------------------------------------------------------------------- */

static void to_mq_attr(const struct mqfs_attr *from, struct mq_attr *to)
{
	memset(to, 0, sizeof *to);
	to->mq_flags = from->flags;
	to->mq_maxmsg = from->maxmsg;
	to->mq_msgsize = from->msgsize;
	to->mq_curmsgs = from->curmsgs;
}

EXPORT int mq_getattr(mqd_t mqd, struct mq_attr *attr)
{
	if (!active())
		return real.mq_getattr(mqd, attr);
	struct mqfs_attr got;
	memset(&got, 0, sizeof got);
	int result = ioctl(mqd, MQFS_IOC_GETATTR, &got);
	if (not_ours(result))
		return real.mq_getattr(mqd, attr);
	if (result < 0)
		return -1;
	to_mq_attr(&got, attr);
	return 0;
}

EXPORT int mq_setattr(mqd_t mqd, const struct mq_attr *attr, struct mq_attr *old)
{
	if (!active())
		return real.mq_setattr(mqd, attr, old);
	struct mqfs_attr request;
	memset(&request, 0, sizeof request);
	int result;
	/* <mqueue.h> says attr is nonnull, but glibc passes NULL through to the kernel, where
	 * it means "only get": keep that, hiding the pointer from the nonnull assumption. */
	__asm__("" : "+r"(attr));
	if (attr == NULL) {
		result = ioctl(mqd, MQFS_IOC_GETATTR, &request);
	} else {
		request.flags = attr->mq_flags;
		result = ioctl(mqd, MQFS_IOC_SETATTR, &request);
	}
	if (not_ours(result))
		return real.mq_setattr(mqd, attr, old);
	if (result < 0)
		return -1;
	if (old != NULL)
		to_mq_attr(&request, old);
	return 0;
}

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

static void drop_notes_locked(int mqd)
{
	struct thread_note **link = &notes;
	while (*link != NULL) {
		if ((*link)->mqd == mqd) {
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
static void before_fork(void) { pthread_mutex_lock(&notes_lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&notes_lock); }
static void after_fork_child(void)
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

static int notify_thread(mqd_t mqd, const struct sigevent *sev)
{
	struct thread_note *note = calloc(1, sizeof *note);
	if (note == NULL)
		return fail(ENOMEM);
	note->mqd = mqd;
	note->function = sev->sigev_notify_function;
	note->value = sev->sigev_value;
	pthread_attr_t *attr = sev->sigev_notify_attributes;
	if (attr != NULL) { /* no public pthread_attr copy: keep what can be read back */
		note->has_attr = 1;
		pthread_attr_getstacksize(attr, &note->stacksize);
		pthread_attr_getguardsize(attr, &note->guardsize);
		pthread_attr_getinheritsched(attr, &note->inheritsched);
		pthread_attr_getschedpolicy(attr, &note->schedpolicy);
		pthread_attr_getschedparam(attr, &note->schedparam);
		pthread_attr_getscope(attr, &note->scope);
	}
	pthread_mutex_lock(&notes_lock);
	if (start_helper_locked() < 0) {
		int saved = errno;
		pthread_mutex_unlock(&notes_lock);
		free(note);
		return fail(saved);
	}
	uint64_t cookie = next_cookie++;
	note->cookie = cookie;
	/* The list entry goes in before the registration: the signal can come at once. */
	note->next = notes;
	notes = note;
	pthread_mutex_unlock(&notes_lock);
	/* From here the helper may take and free note: only the cookie is used. */
	int result = notify_ioctl(mqd, MQFS_NOTIFY_REGISTER, SIGEV_SIGNAL, notify_signo, cookie);
	int saved = errno;
	pthread_mutex_lock(&notes_lock);
	struct thread_note *mine = result < 0 ? take_note_locked(cookie) : NULL;
	if (result == 0) { /* a former registration through this mqd is certainly over */
		struct thread_note **link = &notes;
		while (*link != NULL) {
			if ((*link)->mqd == mqd && (*link)->cookie != cookie) {
				struct thread_note *gone = *link;
				*link = gone->next;
				free(gone);
			} else {
				link = &(*link)->next;
			}
		}
	}
	pthread_mutex_unlock(&notes_lock);
	free(mine);
	if (result < 0 && saved == ENOTTY)
		return real.mq_notify(mqd, sev);
	errno = saved;
	return result < 0 ? -1 : 0;
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
			drop_notes_locked(mqd);
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
	drop_notes_locked(mqd);
	pthread_mutex_unlock(&notes_lock);
	return close(mqd);
}

/* -- the proposed peek APIs: fcntl(F_MQ_PEEK) and mq_timedreceive2(MQ_PEEK) ---------------- */

/* 1 if fd is a queue of an mqfs mount (the GETATTR ioctl works there and nowhere else). */
static int mqfs_queue(int fd, struct mqfs_attr *attr)
{
	int saved = errno;
	memset(attr, 0, sizeof *attr);
	int result = ioctl(fd, MQFS_IOC_GETATTR, attr);
	errno = saved;
	return result == 0;
}

/* FMODE_READ: O_RDONLY or O_RDWR (mq_open's access mode 3 can neither read nor write). */
static int open_for_reading(int fd)
{
	int flags = real.fcntl(fd, F_GETFL);
	return flags >= 0 && ((flags & O_ACCMODE) == O_RDONLY || (flags & O_ACCMODE) == O_RDWR);
}

/* One PEEK ioctl for up to `capacity` bytes of message `index` from `offset`. */
static int peek_chunk(int fd, struct mqfs_peek *p, uint64_t index, uint64_t offset,
		      size_t capacity)
{
	unsigned long cmd = MQFS_IOC_SIZED(MQFS_IOC_PEEK, MQFS_PEEK_HEADER_SIZE + capacity);
	int result;
	do { /* never blocks in the daemon: an interrupted call is simply repeated */
		memset(p, 0, MQFS_PEEK_HEADER_SIZE);
		p->index = index;
		p->offset = offset;
		result = ioctl(fd, cmd, p);
	} while (result < 0 && errno == EINTR);
	return result;
}

/* The queue's generation (it changes whenever the queue does), from a one-record batch. */
static int queue_generation(int fd, uint64_t *generation)
{
	struct mqfs_batch *batch = malloc(sizeof *batch);
	if (batch == NULL)
		return fail(ENOMEM);
	memset(batch, 0, offsetof(struct mqfs_batch, data));
	batch->max_count = 1; /* index 0 exists even in an empty queue */
	int result;
	do
		result = ioctl(fd, MQFS_IOC_PEEK_BATCH, batch);
	while (result < 0 && errno == EINTR);
	int saved = errno;
	*generation = batch->generation;
	free(batch);
	errno = saved;
	return result < 0 ? -1 : 0;
}

#define PEEK_ATTEMPTS 16

/* Copy min(bufmax, length) bytes of message `index` into buf without consuming it; the
 * bytes copied, or -1 with the PEEK ioctl's errno (EAGAIN empty, ENOENT no such index, EBADF
 * not open for reading). The kernel copies under the queue's lock: a peek is one snapshot.
 * Here a message that fits one ioctl is read in one call (a small first call, then one of
 * the right size if needed); a longer one is read by offset between two readings of the
 * queue's generation, and again if the queue changed in between. */
static ssize_t peek_into(int fd, uint64_t index, char *buf, size_t bufmax, unsigned *prio)
{
	size_t most = bufmax < MQFS_CHUNK ? bufmax : MQFS_CHUNK; /* bufmax >= 1 */
	struct mqfs_peek *p = malloc(MQFS_PEEK_HEADER_SIZE + most);
	if (p == NULL)
		return fail(ENOMEM);
	ssize_t result = -1;
	int bracket = 0; /* several calls needed: take the generation before and after */
	for (int attempt = 0;; attempt++) {
		uint64_t before = 0, after = 0;
		if (bracket && queue_generation(fd, &before) < 0)
			break;
		size_t first = attempt == 0 && most > FIRST_CHUNK ? FIRST_CHUNK : most;
		if (peek_chunk(fd, p, index, 0, first) < 0)
			break;
		uint64_t length = p->msg_len;
		unsigned priority = p->msg_prio;
		if (!chunk_fits(length, 0, p->copied, first)) {
			errno = EIO; /* not mqfs's protocol: copy nothing */
			break;
		}
		size_t want = length < bufmax ? (size_t)length : bufmax;
		size_t got = p->copied < want ? p->copied : want;
		memcpy(buf, p->data, got);
		if (got == want) { /* one call: an atomic snapshot */
			*prio = priority;
			result = (ssize_t)got;
			break;
		}
		if (want <= most || !bracket) { /* one bigger call will do, or start bracketed */
			bracket = want > most;
			if (attempt >= PEEK_ATTEMPTS) { /* the message changed on every attempt */
				errno = EAGAIN;
				break;
			}
			continue;
		}
		int changed = 0, bad = 0;
		while (got < want) {
			size_t ask = want - got < MQFS_CHUNK ? want - got : MQFS_CHUNK; /* <= most */
			if (peek_chunk(fd, p, index, got, ask) < 0 || p->msg_len != length ||
			    p->msg_prio != priority) {
				changed = 1; /* gone or replaced: the next attempt says what is there */
				break;
			}
			/* The same message has at least one byte at got: none is a broken reply. */
			if (p->copied == 0 || !chunk_fits(length, got, p->copied, ask)) {
				bad = 1;
				break;
			}
			memcpy(buf + got, p->data, p->copied); /* <= ask <= want - got */
			got += p->copied;
		}
		if (bad) {
			errno = EIO;
			break;
		}
		int steady = !changed && queue_generation(fd, &after) == 0 && after == before;
		if (steady || (!changed && attempt >= PEEK_ATTEMPTS)) {
			*prio = priority;
			result = (ssize_t)got;
			break;
		}
		if (attempt >= PEEK_ATTEMPTS) { /* the queue changed on every attempt */
			errno = EAGAIN;
			break;
		}
	}
	int saved = errno;
	free(p);
	errno = saved;
	return result;
}

/* fcntl(F_MQ_PEEK) on an mqfs queue, in do_mq_peek()'s order of checks. */
static int shim_mq_peek(int fd, struct mq_peek_attr *attr)
{
	if (!open_for_reading(fd))
		return fail(EBADF);
	if (attr == NULL)
		return fail(EFAULT);
	if (attr->offset < 0 || attr->buf_len == 0 || attr->buf == NULL)
		return fail(EINVAL);
	unsigned prio = 0;
	/* The count is returned as an int: no more than INT_MAX bytes, whatever a daemon says. */
	size_t room = attr->buf_len < INT_MAX ? attr->buf_len : INT_MAX;
	ssize_t copied = peek_into(fd, (uint64_t)attr->offset, attr->buf, room, &prio);
	if (copied < 0) {
		if (errno == EAGAIN || errno == ENOENT) /* the RFC: -ENOMSG if offset >= curmsgs */
			errno = ENOMSG;
		return -1;
	}
	attr->msg_prio = prio;
	return (int)copied; /* <= room */
}

/* Only once ready (see fcntl): mount_path is read directly, never through pthread_once. */
static int fcntl_with(int (*real_fcntl)(int, int, ...), int fd, int cmd, void *arg)
{
	struct mqfs_attr attr;
	if (cmd == F_MQ_PEEK && mount_path[0] != '\0' && mqfs_queue(fd, &attr))
		return shim_mq_peek(fd, arg);
	return real_fcntl(fd, cmd, arg);
}

/* The argument is read as glibc's own fcntl64 reads it: one void * (int arguments travel in
 * the same register), passed on whatever the command. */
EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
		static void *early;
		return ((int (*)(int, int, ...))early_lookup(&early, "fcntl"))(fd, cmd, arg);
	}
	return fcntl_with(real.fcntl, fd, cmd, arg);
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
		static void *early;
		return ((int (*)(int, int, ...))early_lookup(&early, "fcntl64"))(fd, cmd, arg);
	}
	return fcntl_with(real.fcntl64, fd, cmd, arg);
}

/* mq_timedreceive2 on an mqfs queue. Argument checks first (the series' second revision:
 * EINVAL for unknown flags and for an index without MQ_PEEK), then as mq_timedreceive:
 * EBADF, EMSGSIZE (msg_len < mq_msgsize, never truncation), then EAGAIN (empty) / ENOENT.
 * A peek never blocks and ignores abs_timeout. */
static long shim_timedreceive2(mqd_t mqd, struct mq_timedreceive2_args *uargs,
			       unsigned flags, unsigned long index,
			       const struct timespec *deadline, const struct mqfs_attr *attr)
{
	if (flags & ~MQ_PEEK)
		return fail(EINVAL);
	if (!(flags & MQ_PEEK) && index != 0)
		return fail(EINVAL);
	if (uargs == NULL)
		return fail(EFAULT);
	if (!(flags & MQ_PEEK))
		return shim_receive(mqd, uargs->msg_ptr, uargs->msg_len, uargs->msg_prio, deadline);
	if (!open_for_reading(mqd))
		return fail(EBADF);
	if (uargs->msg_len < (uint64_t)attr->msgsize)
		return fail(EMSGSIZE);
	unsigned prio = 0;
	ssize_t copied;
	if (uargs->msg_ptr == NULL) { /* the kernel's EFAULT comes at the copy, after ENOENT */
		char scratch;
		copied = peek_into(mqd, index, &scratch, 1, &prio);
		return copied < 0 ? -1 : fail(EFAULT);
	}
	copied = peek_into(mqd, index, uargs->msg_ptr, uargs->msg_len, &prio);
	if (copied < 0)
		return -1;
	if (uargs->msg_prio != NULL)
		*uargs->msg_prio = prio;
	return copied;
}

/* Six long arguments, as glibc's syscall() takes them; all six pass on unchanged. */
EXPORT long syscall(long number, ...)
{
	va_list ap;
	va_start(ap, number);
	long a0 = va_arg(ap, long), a1 = va_arg(ap, long), a2 = va_arg(ap, long);
	long a3 = va_arg(ap, long), a4 = va_arg(ap, long), a5 = va_arg(ap, long);
	va_end(ap);
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
		static void *early;
		return ((long (*)(long, ...))early_lookup(&early, "syscall"))(number, a0, a1, a2,
										a3, a4, a5);
	}
	struct mqfs_attr attr;
	if (number == timedreceive2_nr && mount_path[0] != '\0' && mqfs_queue((int)a0, &attr))
		return shim_timedreceive2((mqd_t)a0, (struct mq_timedreceive2_args *)a1,
					  (unsigned)a2, (unsigned long)a3,
					  (const struct timespec *)a4, &attr);
	return real.syscall(number, a0, a1, a2, a3, a4, a5);
}
