/* peek.c - the two proposed kernel APIs for reading a queue's messages without removing
 * them (include/mqfs/peek.h): fcntl/fcntl64(mqd, F_MQ_PEEK, &attr) and
 * syscall(__NR_mq_timedreceive2 = 548, ...), run on the daemon's PEEK ioctl for a queue of
 * the mount. The shim interposes on fcntl, fcntl64 and syscall for them, so everything else
 * those functions are asked - every other command or number - passes to glibc unchanged;
 * and as allocators and glibc itself call them, they may run before or during the shim's
 * set-up (lookup.c), without ever waiting on it.
 *
 * On a descriptor that is not an mqfs queue (closed, -1, a pipe, a file) both calls answer
 * as their proposals do, EBADF - mq_timedreceive2 without MQ_PEEK is mq_timedreceive there
 * too - so that a program probing with syscall(548, -1, ...) sees EBADF ("present") rather
 * than the kernel's ENOSYS. Two exceptions go to the kernel: any descriptor at all when the
 * kernel implements the call itself (asked once: 548 is not ENOSYS on fd -1, F_MQ_PEEK not
 * EINVAL on a pipe), and a kernel queue's descriptor, which only the kernel could peek
 * (today's kernel: EINVAL, ENOSYS).
 */
#include "shim.h"

#include <sys/vfs.h>

#define MQUEUE_MAGIC 0x19800202 /* <linux/magic.h>: the kernel's mqueue filesystem */

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

/* 1 if fd is a queue of the kernel's own mqueue filesystem. */
static int kernel_queue(int fd)
{
	int saved = errno;
	struct statfs st;
	int result = fstatfs(fd, &st);
	errno = saved;
	return result == 0 && st.f_type == MQUEUE_MAGIC;
}

/* Whether the kernel implements one of the calls, asked once: 0 not yet, 1 no, 2 yes. */
static int timedreceive2_known, mq_peek_known;

static int kernel_has_timedreceive2(void)
{
	int known = __atomic_load_n(&timedreceive2_known, __ATOMIC_RELAXED);
	if (known == 0) { /* the number decides ENOSYS, whatever the descriptor */
		int saved = errno;
		long result = real.syscall(timedreceive2_nr, -1L, 0L, 0L, 0L, 0L, 0L);
		known = result < 0 && errno == ENOSYS ? 1 : 2;
		errno = saved;
		__atomic_store_n(&timedreceive2_known, known, __ATOMIC_RELAXED);
	}
	return known == 2;
}

static int kernel_has_mq_peek(void)
{
	int known = __atomic_load_n(&mq_peek_known, __ATOMIC_RELAXED);
	if (known == 0) { /* an unknown command is EINVAL on any open file; F_MQ_PEEK EBADF */
		int saved = errno, ends[2];
		if (pipe2(ends, O_CLOEXEC) < 0)
			return 0; /* ask again next time */
		char byte;
		struct mq_peek_attr probe = {.offset = 0, .buf_len = 1, .buf = &byte};
		int result = real.fcntl(ends[0], F_MQ_PEEK, &probe);
		known = result < 0 && errno == EINVAL ? 1 : 2;
		close(ends[0]);
		close(ends[1]);
		errno = saved;
		__atomic_store_n(&mq_peek_known, known, __ATOMIC_RELAXED);
	}
	return known == 2;
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

/* How one attempt at a peek ended. */
enum peek_outcome {
	PEEK_FAILED = -1, /* errno says why (the PEEK or PEEK_BATCH ioctl's, or EIO) */
	PEEK_DONE,        /* buf holds the message as one snapshot */
	PEEK_AGAIN,       /* the message changed, or needs more calls than were made: retry */
	PEEK_UNSTEADY,    /* buf holds the message, but the queue changed while it was read */
};

/* A message as a PEEK from its offset 0 showed it: length and priority, how much of it the
 * caller wants (all of it, or bufmax bytes) and how much of that is already in buf. */
struct peeked {
	uint64_t length;
	unsigned priority;
	size_t want, got;
};

/* One PEEK for up to `ask` bytes from the start of message `index`, copied into buf:
 * PEEK_DONE when that was all the caller wants, else PEEK_AGAIN. */
static int peek_head(int fd, struct mqfs_peek *p, uint64_t index, size_t ask, char *buf,
		     size_t bufmax, struct peeked *msg)
{
	if (peek_chunk(fd, p, index, 0, ask) < 0)
		return PEEK_FAILED;
	if (!chunk_fits(p->msg_len, 0, p->copied, ask))
		return fail(EIO); /* not mqfs's protocol: copy nothing */
	msg->length = p->msg_len;
	msg->priority = p->msg_prio;
	msg->want = msg->length < bufmax ? (size_t)msg->length : bufmax;
	msg->got = p->copied < msg->want ? p->copied : msg->want;
	if (copy_out(buf, p->data, msg->got) < 0)
		return PEEK_FAILED; /* EFAULT: the caller's buffer */
	return msg->got == msg->want ? PEEK_DONE : PEEK_AGAIN;
}

/* The rest of the message whose head is in buf, by offset, MQFS_CHUNK bytes a call:
 * PEEK_AGAIN as soon as it is gone or replaced (another length or priority). */
static int peek_rest(int fd, struct mqfs_peek *p, uint64_t index, char *buf,
		     const struct peeked *msg)
{
	for (size_t got = msg->got; got < msg->want; got += p->copied) {
		size_t left = msg->want - got;
		size_t ask = left < MQFS_CHUNK ? left : MQFS_CHUNK; /* <= most: fits p */
		if (peek_chunk(fd, p, index, got, ask) < 0 || p->msg_len != msg->length ||
		    p->msg_prio != msg->priority)
			return PEEK_AGAIN; /* the next attempt says what is there now */
		/* The same message has at least one byte at got: none is a broken reply. */
		if (p->copied == 0 || !chunk_fits(msg->length, got, p->copied, ask))
			return fail(EIO);
		if (copy_out(buf + got, p->data, p->copied) < 0) /* <= ask <= left */
			return PEEK_FAILED;
	}
	return PEEK_DONE;
}

/* A message longer than one call takes: head and rest between two readings of the queue's
 * generation. PEEK_UNSTEADY if it moved in between (or cannot be read the second time). */
static int peek_bracketed(int fd, struct mqfs_peek *p, uint64_t index, size_t most, char *buf,
			  size_t bufmax, struct peeked *msg)
{
	uint64_t before, after;
	if (queue_generation(fd, &before) < 0)
		return PEEK_FAILED;
	int outcome = peek_head(fd, p, index, most, buf, bufmax, msg);
	if (outcome != PEEK_AGAIN || msg->want <= most) /* done, failed, or now one call's worth */
		return outcome;
	outcome = peek_rest(fd, p, index, buf, msg);
	if (outcome != PEEK_DONE)
		return outcome;
	if (queue_generation(fd, &after) < 0 || after != before)
		return PEEK_UNSTEADY;
	return PEEK_DONE;
}

/* peek_into's attempts, p holding `most` bytes of data. Each reads the message whole: in
 * one call while it fits one (the first call asks FIRST_CHUNK bytes, as mqfs/client/calls.py),
 * bracketed once the previous attempt showed it does not. After PEEK_ATTEMPTS retries the
 * last attempt decides: a bracketed copy that held together is taken even though the queue
 * moved meanwhile; anything else is EAGAIN. */
static ssize_t peek_attempts(int fd, struct mqfs_peek *p, size_t most, uint64_t index,
			     char *buf, size_t bufmax, unsigned *prio)
{
	struct peeked msg = {0}; /* nothing seen yet: want 0 fits one call */
	for (int attempt = 0;; attempt++) {
		int last = attempt >= PEEK_ATTEMPTS, outcome;
		if (msg.want > most)
			outcome = peek_bracketed(fd, p, index, most, buf, bufmax, &msg);
		else
			outcome = peek_head(fd, p, index,
					    attempt == 0 && most > FIRST_CHUNK ? FIRST_CHUNK : most,
					    buf, bufmax, &msg);
		if (outcome == PEEK_FAILED)
			return -1;
		if (outcome == PEEK_DONE || (outcome == PEEK_UNSTEADY && last)) {
			*prio = msg.priority;
			return (ssize_t)msg.want;
		}
		if (last) /* the message or the queue changed on every attempt */
			return fail(EAGAIN);
	}
}

/* Copy min(bufmax, length) bytes of message `index` into buf without consuming it; the
 * bytes copied, or -1 with the PEEK ioctl's errno (EAGAIN empty, ENOENT no such index, EBADF
 * not open for reading) or EFAULT (buf, the caller's, cannot take them). The kernel copies
 * under the queue's lock: a peek is one snapshot. Here a message that fits one ioctl is
 * read in one call (a small first call, then one of the right size if needed); a longer one
 * is read by offset between two readings of the queue's generation, and again if the queue
 * changed in between. */
static ssize_t peek_into(int fd, uint64_t index, char *buf, size_t bufmax, unsigned *prio)
{
	ssize_t fast;
	if (fast_peek(fd, index, buf, bufmax, prio, &fast))
		return fast;
	size_t most = bufmax < MQFS_CHUNK ? bufmax : MQFS_CHUNK; /* bufmax >= 1 */
	struct mqfs_peek *p = malloc(MQFS_PEEK_HEADER_SIZE + most);
	if (p == NULL)
		return fail(ENOMEM);
	ssize_t result = peek_attempts(fd, p, most, index, buf, bufmax, prio);
	int saved = errno;
	free(p);
	errno = saved;
	return result;
}

/* fcntl(F_MQ_PEEK) on an mqfs queue, in do_mq_peek()'s order of checks: EBADF, the struct
 * (EFAULT), EINVAL, ENOMSG, then the copies out (EFAULT): buf, then msg_prio. */
static int shim_mq_peek(int fd, struct mq_peek_attr *uattr)
{
	if (!open_for_reading(fd))
		return fail(EBADF);
	struct mq_peek_attr attr;
	if (copy_in(&attr, uattr, sizeof attr) < 0)
		return -1;
	if (attr.offset < 0 || attr.buf_len == 0 || attr.buf == NULL)
		return fail(EINVAL);
	unsigned prio = 0;
	/* The count is returned as an int: no more than INT_MAX bytes, whatever a daemon says. */
	size_t room = attr.buf_len < INT_MAX ? attr.buf_len : INT_MAX;
	ssize_t copied = peek_into(fd, (uint64_t)attr.offset, attr.buf, room, &prio);
	if (copied < 0) {
		if (errno == EAGAIN || errno == ENOENT) /* the RFC: -ENOMSG if offset >= curmsgs */
			errno = ENOMSG;
		return -1;
	}
	__u32 reported = prio;
	if (copy_out(&uattr->msg_prio, &reported, sizeof reported) < 0)
		return -1;
	return (int)copied; /* <= room */
}

/* Only once ready (see fcntl): mount_path is read directly, never through pthread_once. */
static int fcntl_with(int (*real_fcntl)(int, int, ...), int fd, int cmd, void *arg)
{
	struct mqfs_attr attr;
	if (cmd == F_MQ_PEEK && mount_path[0] != '\0') {
		if (fast_attr(fd, &attr) || mqfs_queue(fd, &attr))
			return shim_mq_peek(fd, arg);
		if (!kernel_has_mq_peek() && !kernel_queue(fd))
			return fail(EBADF); /* not a queue: the RFC's answer (closed and -1 too) */
	}
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

/* mq_timedreceive2 on an mqfs queue (attr: its attributes) or on a descriptor that is not
 * one (attr NULL). Argument checks first (the series' second revision: EINVAL for unknown
 * flags and for an index without MQ_PEEK; EFAULT for args), then as mq_timedreceive:
 * EBADF, EMSGSIZE (msg_len < mq_msgsize, never truncation), then EAGAIN (empty) / ENOENT,
 * then the copies out (EFAULT): the message, then msg_prio. A peek never blocks and
 * ignores abs_timeout. Without MQ_PEEK it is shim_receive, which hands a descriptor that is
 * not the daemon's to glibc's mq_timedreceive. */
static long shim_timedreceive2(long number, mqd_t mqd, struct mq_timedreceive2_args *uargs,
			       unsigned flags, unsigned long index,
			       const struct timespec *deadline, const struct mqfs_attr *attr)
{
	if (flags & ~MQ_PEEK)
		return fail(EINVAL);
	if (!(flags & MQ_PEEK) && index != 0)
		return fail(EINVAL);
	struct mq_timedreceive2_args args;
	if (copy_in(&args, uargs, sizeof args) < 0)
		return -1;
	if (!(flags & MQ_PEEK))
		return shim_receive(mqd, args.msg_ptr, args.msg_len, args.msg_prio, deadline);
	if (attr == NULL) {
		if (kernel_queue(mqd)) /* only the kernel could peek it */
			return real.syscall(number, (long)mqd, (long)uargs, (long)flags, (long)index,
					    (long)deadline, 0L);
		return fail(EBADF);
	}
	if (!open_for_reading(mqd))
		return fail(EBADF);
	if (args.msg_len < (uint64_t)attr->msgsize)
		return fail(EMSGSIZE);
	unsigned prio = 0;
	ssize_t copied = peek_into(mqd, index, args.msg_ptr, args.msg_len, &prio);
	if (copied < 0)
		return -1;
	if (args.msg_prio != NULL && copy_out(args.msg_prio, &prio, sizeof prio) < 0)
		return -1;
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
	if (number == timedreceive2_nr && mount_path[0] != '\0') {
		int ours = fast_attr((int)a0, &attr) || mqfs_queue((int)a0, &attr);
		if (ours || !kernel_has_timedreceive2())
			return shim_timedreceive2(number, (mqd_t)a0,
						  (struct mq_timedreceive2_args *)a1, (unsigned)a2,
						  (unsigned long)a3, (const struct timespec *)a4,
						  ours ? &attr : NULL);
	}
	return real.syscall(number, a0, a1, a2, a3, a4, a5);
}
