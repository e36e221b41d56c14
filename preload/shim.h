/* shim.h - what the files of the LD_PRELOAD shim share: run unmodified programs' POSIX message
 * queues on an mqfs mount.
 *
 *   LD_PRELOAD=libmqfs-preload.so MQFS_MOUNT=/run/mqfs ./program
 *
 * Interposes glibc's mq_* calls. With MQFS_MOUNT set (non-empty), mq_open("/name") becomes
 * the CREATE ioctl on the mount's root plus open(MNT/name/queue), and the returned mqd_t is
 * that real file descriptor: fork, dup, close, poll/select/epoll and FD_CLOEXEC behave as
 * with the kernel's mqd_t. Send/receive/getattr/setattr/notify are the mqfs ioctls of
 * include/mqfs.h (send/receive mostly framed I/O: framed.c); on a `-o fastpath` mount the
 * owner's send/receive/getattr run on the queue's mapping instead (fastpath.c). Without
 * MQFS_MOUNT every call goes straight to glibc (dlsym RTLD_NEXT).
 *
 * A descriptor that is not an mqfs queue is handed to glibc too: the ioctl says ENOTTY (a
 * pipe, a file, a kernel queue) or EBADF (closed, -1; or an mqfs queue not open for that
 * direction, where the kernel's answer is EBADF as well). The kernel then checks the
 * arguments it checks before the descriptor (the timeout, the priority, mq_setattr's and
 * mq_notify's flags) and answers exactly as without the shim.
 *
 * Behaviour the shim chooses (see README, "LD_PRELOAD"):
 *  - EINTR (the daemon's way; the fast path's is the kernel's own, fastpath.c): a blocked FUSE request interrupted by a signal fails with EINTR whatever
 *    SA_RESTART says. The kernel restarts mq_(timed)send/receive when the handler has
 *    SA_RESTART. The shim cannot learn which signal interrupted it, so it restarts only when
 *    that is certainly right: when every caught signal of the process has SA_RESTART.
 *    Otherwise EINTR. A restart keeps the absolute deadline, so timed calls still end on
 *    time.
 *  - SIGEV_THREAD: registered with the daemon as SIGEV_THREAD; a helper thread per
 *    registration waits for it in the NOTIFY_WAIT ioctl and starts a detached thread
 *    running the function with the value, as glibc does (notify.c). No signal is used.
 *  - Replies are not trusted: MQFS_MOUNT may be any FUSE filesystem, so a RECEIVE or PEEK
 *    reply whose lengths do not fit the request, the message or the buffer gives EIO.
 *
 * The two proposed peek APIs of include/mqfs/peek.h run here too (README, "Developing
 * against the proposed peek APIs"): fcntl/fcntl64(mqd, F_MQ_PEEK, &attr) on an mqfs queue,
 * and syscall(548, ...) = mq_timedreceive2 on an mqfs queue (the number can be changed with
 * MQFS_MQ_TIMEDRECEIVE2_NR). Every other fcntl command and syscall number goes to glibc
 * unchanged. On a descriptor that is not a queue both answer as the proposals do (EBADF)
 * unless the kernel has the call itself; a kernel queue's descriptor goes to the kernel.
 *
 * The files (scripts/build-preload compiles every preload/NAME.c into the one library):
 *   lookup.c    glibc's functions and the mount, looked up once; mq_open, __mq_open_2,
 *               mq_unlink: queue names to paths under the mount
 *   sendrecv.c  mq_(timed)send, mq_(timed)receive, mq_getattr, mq_setattr, and when an
 *               interrupted blocking call is restarted (EINTR and SA_RESTART)
 *   notify.c    mq_notify and SIGEV_THREAD (helper threads, fork), mq_close
 *   peek.c      the proposed peek APIs: fcntl/fcntl64(F_MQ_PEEK) and syscall(548)
 *   framed.c    mq_send and mq_receive as one pwritev/preadv of the queue file
 *   fastpath.c  on a `-o fastpath` mount: the queue's shared mapping (MAP ioctl), on which
 *               send, receive and getattr run with fastq (fastq/fastq.c, compiled in), and
 *               the descriptor table that close, dup2, dup3, close_range, closefrom keep
 *   usermem.c   the program's buffers, copied so that a bad pointer is EFAULT, not a crash
 *               (the fast path's copies: a memcpy under a SIGSEGV/SIGBUS guard)
 *
 * Only the mq_* functions, __mq_open_2, fcntl, fcntl64, syscall, close, dup2, dup3,
 * close_range and closefrom are exported (EXPORT);
 * the library is built with -fvisibility=hidden and everything declared below is hidden
 * too, so the split into files adds no symbol to the library's interface.
 *
 * Include this header first: it sets the feature macros for the system headers.
 */
#ifndef MQFS_PRELOAD_SHIM_H
#define MQFS_PRELOAD_SHIM_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#undef _FORTIFY_SOURCE /* lookup.c defines __mq_open_2 and mq_open itself */

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
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mqfs.h"
#include "mqfs/peek.h"

#define EXPORT __attribute__((visibility("default")))
#define NAME_MAX_MQ 255
#define FIRST_CHUNK 1024 /* as mqfs/client/calls.py: ask small first, fetch the rest by xfer_id */

#pragma GCC visibility push(hidden)

/* -- lookup.c: the real functions and the mount, looked up once ---------------------------- */

struct real_functions {
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
	int (*close)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*close_range)(unsigned, unsigned, int);
	void (*closefrom)(int);
};

extern struct real_functions real;
extern long timedreceive2_nr; /* MQFS_MQ_TIMEDRECEIVE2_NR */
extern char mount_path[PATH_MAX - NAME_MAX_MQ - 16]; /* "" = pass everything to glibc */
/* 1 once init() has finished: real.* and mount_path are set and never change again. */
extern int ready;

/* Whether to run a call on the mount (set up first if needed); 0: hand it to glibc. */
int active(void);
/* glibc's `symbol` for fcntl/fcntl64/syscall called before the constructor ran. */
void *early_lookup(void **cache, const char *symbol);

static inline int fail(int code)
{
	errno = code;
	return -1;
}

/* -- usermem.c: the program's buffers ------------------------------------------------------ */

/* Copy len bytes from or to the program's memory: 0, or -1 with EFAULT where the kernel's
 * copy_from_user/copy_to_user would fail (nothing is copied past a bad byte). len 0 never
 * fails. Every buffer, struct and out-parameter a caller passes goes through these. */
int copy_in(void *to, const void *user, size_t len);
int copy_out(void *user, const void *from, size_t len);
/* 0 if every byte of [user, user + len) can be read (one byte of each page is), else EFAULT:
 * a long message is checked whole before its first chunk goes to the daemon. */
int check_readable(const void *user, size_t len);
/* The fast path's copies (usermem.c, "the fault guard"): as copy_in, and a received
 * message: the priority (if user_prio is not NULL), then len bytes, in that order (EFAULT
 * at the first bad byte, as the kernel's mq_timedreceive). Plain memcpy under a SIGSEGV/
 * SIGBUS guard once fault_guard_install() has run, else copy_in/copy_out. */
void fault_guard_install(void);
int guarded_copy_in(void *to, const void *user, size_t len);
int copy_out_message(unsigned *user_prio, unsigned prio, void *user, const void *from,
		     size_t len);
/* *user into *copy as the kernel's prepare_timeout: EFAULT, or EINVAL for a negative
 * tv_sec or a tv_nsec outside [0, 1e9). */
int read_timeout(const struct timespec *user, struct timespec *copy);

/* -- sendrecv.c: send, receive and restarts after EINTR -------------------------------------- */

/* Whether the kernel would surely have restarted an interrupted call: every caught signal
 * has SA_RESTART (shim.h, "EINTR"). */
int restart_is_safe(void);

/* mq_timedreceive on a descriptor of the mount (also mq_timedreceive2 without MQ_PEEK). */
ssize_t shim_receive(mqd_t mqd, char *buffer, size_t buflen, unsigned *prio,
		     const struct timespec *deadline);

/* Whether a reply's chunk is possible: `chunk` bytes from `offset` of a `length`-byte
 * message, for a request of at most `asked` bytes. MQFS_MOUNT may be any FUSE filesystem,
 * so no length or offset from a reply is used (to copy, or to size a copy) before this
 * says yes; the callers treat no as EIO. The chunk then fits the ioctl buffer (sized for
 * `asked`) and, as length <= the caller's room, the caller's buffer. */
static inline int chunk_fits(uint64_t length, uint64_t offset, uint64_t chunk, size_t asked)
{
	return chunk <= asked && offset <= length && chunk <= length - offset;
}

/* 1: the descriptor is not one of the daemon's (ENOTTY, EBADF), or it is but may not be used
 * so (EBADF): the caller hands the call to glibc, whose kernel gives its own errno in its own
 * order of checks. */
static inline int not_ours(int result)
{
	return result < 0 && (errno == ENOTTY || errno == EBADF);
}

/* -- framed.c: mq_send and mq_receive in one pwrite()/pread() ------------------------------ */

/* 1 if the call was made the framed way, its mq_send result (0 or -1 with errno) in
 * *result; 0 if it must go the ioctl way (nothing was sent). Only for calls without a
 * deadline, after the priority check. */
int framed_send(mqd_t mqd, const char *msg, size_t len, unsigned prio, int *result);
/* The same for mq_receive: *result is its result; 0 means nothing was received. */
int framed_receive(mqd_t mqd, char *buffer, size_t buflen, unsigned *prio, ssize_t *result);

/* -- fastpath.c: the queue's shared mapping on a `-o fastpath` mount --------------------- */

/* After mq_open made *fd* a queue descriptor: ask MAP, and remember the answer. */
void fast_open(int fd);
/* Descriptor *fd* was closed or replaced: forget what is known about it. */
void fast_forget(int fd);
/* 1 if the call ran on the mapping (its result in *result*, errno set), 0: the daemon's
 * way. After the timeout's and the priority's checks. */
int fast_send(mqd_t mqd, const char *msg, size_t len, unsigned prio,
	      const struct timespec *deadline, int *result);
int fast_receive(mqd_t mqd, char *buffer, size_t buflen, unsigned *prio,
		 const struct timespec *deadline, ssize_t *result);
int fast_getattr(mqd_t mqd, struct mq_attr *attr, int *result);
/* peek.c's: 1 if *fd* is a mapped queue (its maxmsg and msgsize in *attr*); and message
 * *index* peeked from the mapping, as peek.c's peek_into (EAGAIN, ENOENT, EFAULT). */
int fast_attr(int fd, struct mqfs_attr *attr);
int fast_peek(int fd, uint64_t index, char *buf, size_t bufmax, unsigned *prio,
	      ssize_t *result);
void fast_after_fork_child(void);

/* -- notify.c: fork handlers, registered by lookup.c's init --------------------------------- */

void before_fork(void);
void after_fork_parent(void);
void after_fork_child(void);

#pragma GCC visibility pop

#endif /* MQFS_PRELOAD_SHIM_H */
