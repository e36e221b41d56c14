/* fastpath.c - mq_send, mq_receive and mq_getattr straight on the queue's shared mapping,
 * with no daemon round trip, on a mount made with `-o fastpath` (fastq/fastq.h).
 *
 * Which descriptors. After mq_open has the queue's descriptor it asks the MAP ioctl where
 * the queue's mapping is; the reply (untrusted: MQFS_MOUNT may be any FUSE filesystem) must
 * name an absolute, NUL-terminated path and the layout version this shim was built with,
 * and fastq_attach checks the file's header against the reply's geometry. Any failure
 * (EOPNOTSUPP: no fast path on this mount; EACCES: the caller is not the queue's owner or
 * root; ENOTTY: not an mqfs queue) means the descriptor goes the daemon's way, as without
 * the fast path. The answer is kept in a table indexed by descriptor, negative answers too,
 * so a descriptor the shim did not open (dup, inherited, F_DUPFD) asks MAP once, lazily.
 * fork copies the table with the mappings (MAP_SHARED); exec drops both with the shim.
 * close, dup2, dup3, close_range and closefrom (and mq_close, which is close) drop the
 * entry of every descriptor they close or replace; each costs one load when the
 * descriptor has no entry. A descriptor closed some other way (a raw close syscall) would
 * keep a stale entry: the same limit as any descriptor cache in a preloaded library.
 *
 * Table entries and concurrency. A slot holds UNKNOWN, NONE, BUSY (a thread is asking MAP)
 * or a pointer to a reference-counted mapping. A call takes a reference under the slot's
 * spin lock (a few instructions), so a close in another thread never unmaps under a
 * blocked receive: the last reference unmaps. An entry made for a descriptor closed while
 * MAP was being asked is dropped (close sets the slot UNKNOWN, and only a BUSY slot is
 * filled). Slot chunks are allocated on first use and never freed: memory grows with the
 * highest descriptor number used for queues, not with history. mq_send and mq_receive are
 * async-signal-safe: a call only tries the slot's lock (a handler may have interrupted its
 * holder) and goes the daemon's way if it stays taken, and a message of up to BOUNCE_STACK
 * bytes bounces through the stack; asking MAP for a descriptor new to the table allocates.
 *
 * Semantics. The kernel's order of checks is kept: the timeout (EFAULT, EINVAL) and the
 * priority are sendrecv.c's, before this file is asked; then EBADF from the access mode,
 * EMSGSIZE, the message (EFAULT), then EAGAIN/ETIMEDOUT. The access mode and O_NONBLOCK
 * come from fcntl(F_GETFL) on every call, never cached: dup, fork and mq_setattr from
 * another process share the open file description (mq_setattr sets O_NONBLOCK there too:
 * sendrecv.c). EINTR is fastq's: futex_waitv is restarted by the kernel after a SA_RESTART
 * handler and ends with EINTR otherwise, exactly mq_timedsend/receive's behaviour, so
 * restart_is_safe()'s guess is not used here.
 *
 * Bad pointers. fastq copies between the mapping and the buffer it is given with the
 * queue's mutex held. fastq's own guard (fastq_guard_install) would roll the operation
 * back on a fault, which gives the wrong answers: a send with a bad buffer to a full queue
 * must be EFAULT (the kernel copies the message in before it waits), not EAGAIN, and a
 * receive into a bad buffer must lose the message (the kernel takes it, then copies it
 * out), not keep it. So fastq only ever sees a bounce buffer of the shim's: a send copies
 * the message in first (EFAULT in the kernel's place); a receive takes the message into
 * the bounce buffer, then writes the priority and the message out (EFAULT after the
 * message is gone, the priority written first, as the kernel's). Those two copies are
 * usermem.c's guarded ones (a plain memcpy under a SIGSEGV/SIGBUS guard installed when the
 * process first maps a queue), not copy_in/copy_out: process_vm_readv/writev, measured on
 * a 64-byte pair, made it 8.6 us instead of 0.72 us (0.26x the kernel's pairs/s instead of
 * 3x), where the guard costs a sigsetjmp.
 */
#include "shim.h"

#include "fastq.h"

#define CHUNK_BITS 10
#define CHUNK_SLOTS (1 << CHUNK_BITS)
#define CHUNKS 1024
#define FD_LIMIT (CHUNKS * CHUNK_SLOTS) /* higher descriptors go the daemon's way */
#define BOUNCE_STACK 8192               /* larger messages bounce through malloc */

enum { UNKNOWN = 0, NONE = 1, BUSY = 2 };

struct mapping {
	struct fastq q;
	int refs; /* the table's entry and every call using it */
};

struct slot {
	uintptr_t value; /* UNKNOWN, NONE, BUSY or a struct mapping * */
	int lock;
};

static struct slot *chunks[CHUNKS];

/* -- the table ----------------------------------------------------------------------------- */

static struct slot *slot_of(int fd, int create)
{
	if (fd < 0 || fd >= FD_LIMIT)
		return NULL;
	struct slot **at = &chunks[fd >> CHUNK_BITS];
	struct slot *chunk = __atomic_load_n(at, __ATOMIC_ACQUIRE);
	if (chunk == NULL && create) {
		int saved = errno;
		struct slot *fresh = calloc(CHUNK_SLOTS, sizeof *fresh);
		errno = saved;
		if (fresh == NULL)
			return NULL;
		if (__atomic_compare_exchange_n(at, &chunk, fresh, 0, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			chunk = fresh;
		else
			free(fresh); /* another thread's chunk is in `chunk` */
	}
	return chunk == NULL ? NULL : &chunk[fd & (CHUNK_SLOTS - 1)];
}

static void slot_lock(struct slot *s)
{
	while (__atomic_exchange_n(&s->lock, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&s->lock, __ATOMIC_RELAXED))
			sched_yield(); /* held for a few instructions only */
}

static void slot_unlock(struct slot *s) { __atomic_store_n(&s->lock, 0, __ATOMIC_RELEASE); }

/* The lock, unless it stays taken: its holder may be the code this thread's signal handler
 * interrupted (mq_send is async-signal-safe), which would never let go. 0: not taken. */
static int slot_trylock(struct slot *s)
{
	for (int attempt = 0; attempt < 64; attempt++) {
		if (!__atomic_exchange_n(&s->lock, 1, __ATOMIC_ACQUIRE))
			return 1;
		sched_yield();
	}
	return 0;
}

static int is_mapping(uintptr_t value) { return value > BUSY; }

static void release(struct mapping *m)
{
	if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		fastq_detach(&m->q);
		free(m);
	}
}

/* Set the slot of *fd* to *value*, dropping the mapping it held. */
static void slot_set(struct slot *s, uintptr_t value)
{
	slot_lock(s);
	uintptr_t old = s->value;
	s->value = value;
	slot_unlock(s);
	if (is_mapping(old))
		release((struct mapping *)old);
}

/* The MAP ioctl's mapping of queue descriptor *fd*, attached; NULL if there is none (errno
 * untouched). *transient*: worth asking again later (the ioctl was interrupted). */
static struct mapping *map_queue(int fd, int *transient)
{
	int saved = errno;
	struct mapping *m = NULL;
	struct mqfs_map reply;
	memset(&reply, 0, sizeof reply);
	*transient = 0;
	if (ioctl(fd, MQFS_IOC_MAP, &reply) < 0) {
		*transient = errno == EINTR;
		goto out;
	}
	if (memchr(reply.path, '\0', sizeof reply.path) == NULL || reply.path[0] != '/' ||
	    reply.version != FASTQ_VERSION || reply.maxmsg == 0 || reply.maxmsg > UINT32_MAX ||
	    reply.msgsize > UINT32_MAX)
		goto out;
	int file = open(reply.path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (file < 0)
		goto out;
	m = calloc(1, sizeof *m);
	if (m != NULL &&
	    fastq_attach(&m->q, file, (uint32_t)reply.maxmsg, (uint32_t)reply.msgsize) != 0) {
		free(m);
		m = NULL;
	}
	real.close(file); /* the mapping keeps the file */
	if (m != NULL) {
		m->refs = 1;
		fault_guard_install();
	}
out:
	errno = saved;
	return m;
}

void fast_open(int fd)
{
	struct slot *s = slot_of(fd, 1);
	if (s == NULL)
		return;
	int transient;
	struct mapping *m = map_queue(fd, &transient);
	slot_set(s, m != NULL ? (uintptr_t)m : transient ? UNKNOWN : NONE);
}

void fast_forget(int fd)
{
	struct slot *s = slot_of(fd, 0);
	if (s != NULL && __atomic_load_n(&s->value, __ATOMIC_RELAXED) != UNKNOWN)
		slot_set(s, UNKNOWN);
}

static void forget_range(unsigned first, unsigned last)
{
	for (unsigned fd = first; fd <= last && fd < FD_LIMIT; fd++) {
		if (__atomic_load_n(&chunks[fd >> CHUNK_BITS], __ATOMIC_ACQUIRE) == NULL) {
			fd |= CHUNK_SLOTS - 1; /* the whole chunk is empty */
			continue;
		}
		fast_forget((int)fd);
	}
}

/* A new reference to *fd*'s mapping, asking MAP first if the descriptor is new to the
 * table; NULL: the daemon's way. */
static struct mapping *acquire(int fd)
{
	struct slot *s = slot_of(fd, 1);
	if (s == NULL)
		return NULL;
	uintptr_t value = __atomic_load_n(&s->value, __ATOMIC_ACQUIRE);
	if (value == NONE || value == BUSY)
		return NULL;
	if (value == UNKNOWN) {
		if (!slot_trylock(s))
			return NULL;
		int mine = s->value == UNKNOWN;
		if (mine)
			s->value = BUSY;
		slot_unlock(s);
		if (!mine)
			return NULL;
		int transient;
		struct mapping *m = map_queue(fd, &transient);
		slot_lock(s); /* this thread set BUSY: no handler of its own holds the lock */
		if (s->value == BUSY) { /* not closed meanwhile */
			s->value = m != NULL ? (uintptr_t)m : transient ? UNKNOWN : NONE;
			m = NULL;
		}
		slot_unlock(s);
		if (m != NULL)
			release(m);
	}
	struct mapping *m = NULL;
	if (!slot_trylock(s))
		return NULL; /* the daemon's way, which reads the same mapping */
	if (is_mapping(s->value)) {
		m = (struct mapping *)s->value;
		__atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
	}
	slot_unlock(s);
	return m;
}

/* After fork, in the child: a slot lock or a MAP in flight belonged to a thread that the
 * child does not have. */
void fast_after_fork_child(void)
{
	for (int c = 0; c < CHUNKS; c++) {
		struct slot *chunk = chunks[c];
		for (int i = 0; chunk != NULL && i < CHUNK_SLOTS; i++) {
			chunk[i].lock = 0;
			if (chunk[i].value == BUSY)
				chunk[i].value = UNKNOWN;
		}
	}
}

/* -- send, receive, getattr ------------------------------------------------------------------ */

/* The access mode and O_NONBLOCK of the open file description, now. */
static int description_flags(int fd, int want_write)
{
	int flags = real.fcntl(fd, F_GETFL);
	if (flags < 0)
		return -1; /* EBADF: closed meanwhile */
	int mode = flags & O_ACCMODE; /* FMODE_READ/WRITE: mode 3 has neither, as the kernel's */
	if (want_write ? mode != O_WRONLY && mode != O_RDWR : mode != O_RDONLY && mode != O_RDWR)
		return fail(EBADF);
	return flags;
}

static unsigned fastq_flags(int flags, const struct timespec *deadline)
{
	return (flags & O_NONBLOCK ? FASTQ_NONBLOCK : 0) | (deadline != NULL ? FASTQ_TIMED : 0);
}

/* The mapping is unusable (-EUCLEAN: corrupt or truncated): this descriptor goes the
 * daemon's way from now on (the daemon checks the mapping itself). */
static void give_up(int fd)
{
	struct slot *s = slot_of(fd, 0);
	if (s != NULL)
		slot_set(s, NONE);
}

int fast_send(mqd_t mqd, const char *msg, size_t len, unsigned prio,
	      const struct timespec *deadline, int *result)
{
	struct mapping *m = acquire(mqd);
	if (m == NULL)
		return 0;
	char stack[BOUNCE_STACK], *bounce = stack;
	int r, flags = description_flags(mqd, 1);
	if (flags < 0) {
		r = -1;
	} else if (len > m->q.msgsize) {
		r = fail(EMSGSIZE);
	} else if (len > sizeof stack && (bounce = malloc(len)) == NULL) {
		r = fail(ENOMEM);
	} else if (guarded_copy_in(bounce, msg, len) < 0) { /* EFAULT before EAGAIN, as the kernel */
		r = -1;
	} else {
		r = fastq_send(&m->q, bounce, len, prio, fastq_flags(flags, deadline), deadline);
		if (r < 0)
			r = fail(-r);
	}
	if (bounce != stack)
		free(bounce);
	release(m);
	if (r < 0 && errno == EUCLEAN) { /* nothing was sent */
		give_up(mqd);
		return 0;
	}
	*result = r;
	return 1;
}

int fast_receive(mqd_t mqd, char *buffer, size_t buflen, unsigned *prio,
		 const struct timespec *deadline, ssize_t *result)
{
	struct mapping *m = acquire(mqd);
	if (m == NULL)
		return 0;
	char stack[BOUNCE_STACK], *bounce = stack;
	size_t room = m->q.msgsize;
	ssize_t r;
	int flags = description_flags(mqd, 0);
	if (flags < 0) {
		r = -1;
	} else if (buflen < room) {
		r = fail(EMSGSIZE);
	} else if (room > sizeof stack && (bounce = malloc(room)) == NULL) {
		r = fail(ENOMEM);
	} else {
		unsigned priority = 0;
		r = fastq_receive(&m->q, bounce, room, &priority, fastq_flags(flags, deadline),
				  deadline);
		if (r < 0)
			r = fail((int)-r);
		else if (copy_out_message(prio, priority, buffer, bounce, (size_t)r) < 0)
			r = -1; /* EFAULT: the message is gone, as the kernel's */
	}
	if (bounce != stack)
		free(bounce);
	release(m);
	if (r < 0 && errno == EUCLEAN) { /* nothing was received */
		give_up(mqd);
		return 0;
	}
	*result = r;
	return 1;
}

int fast_getattr(mqd_t mqd, struct mq_attr *attr, int *result)
{
	struct mapping *m = acquire(mqd);
	if (m == NULL)
		return 0;
	struct fastq_state state;
	int r = fastq_state(&m->q, &state);
	struct mq_attr out;
	memset(&out, 0, sizeof out);
	out.mq_maxmsg = m->q.maxmsg;
	out.mq_msgsize = m->q.msgsize;
	out.mq_curmsgs = state.count;
	release(m);
	if (r < 0) {
		give_up(mqd);
		return 0;
	}
	int flags = real.fcntl(mqd, F_GETFL);
	if (flags < 0)
		*result = -1;
	else {
		out.mq_flags = flags & O_NONBLOCK;
		*result = copy_out(attr, &out, sizeof out); /* EFAULT after EBADF */
	}
	return 1;
}

/* -- the calls that close descriptors ------------------------------------------------------- */

EXPORT int close(int fd)
{
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
		static void *early;
		return ((int (*)(int))early_lookup(&early, "close"))(fd);
	}
	int result = real.close(fd);
	fast_forget(fd); /* closed even if it says EINTR or EIO; a stale entry if EBADF */
	return result;
}

EXPORT int dup2(int old, int new)
{
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
		static void *early;
		return ((int (*)(int, int))early_lookup(&early, "dup2"))(old, new);
	}
	int result = real.dup2(old, new);
	if (result >= 0 && old != new)
		fast_forget(new);
	return result;
}

EXPORT int dup3(int old, int new, int flags)
{
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
		static void *early;
		return ((int (*)(int, int, int))early_lookup(&early, "dup3"))(old, new, flags);
	}
	int result = real.dup3(old, new, flags);
	if (result >= 0)
		fast_forget(new);
	return result;
}

EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE) || real.close_range == NULL)
		return (int)syscall(SYS_close_range, first, last, flags);
	int result = real.close_range(first, last, flags);
	if (result == 0 && !(flags & CLOSE_RANGE_CLOEXEC))
		forget_range(first, last);
	return result;
}

EXPORT void closefrom(int low)
{
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE) || real.closefrom == NULL) {
		syscall(SYS_close_range, (unsigned)low, ~0u, 0);
		return;
	}
	real.closefrom(low);
	if (low >= 0)
		forget_range((unsigned)low, ~0u);
}

/* -- the proposed peek APIs (peek.c) --------------------------------------------------------- */

int fast_attr(int fd, struct mqfs_attr *attr)
{
	struct mapping *m = acquire(fd);
	if (m == NULL)
		return 0;
	memset(attr, 0, sizeof *attr);
	attr->maxmsg = m->q.maxmsg;
	attr->msgsize = m->q.msgsize;
	release(m);
	return 1;
}

int fast_peek(int fd, uint64_t index, char *buf, size_t bufmax, unsigned *prio,
	      ssize_t *result)
{
	struct mapping *m = acquire(fd);
	if (m == NULL)
		return 0;
	char stack[BOUNCE_STACK], *bounce = stack;
	size_t room = bufmax < m->q.msgsize ? bufmax : m->q.msgsize;
	ssize_t r;
	uint32_t length, priority;
	if (room > sizeof stack && (bounce = malloc(room)) == NULL) {
		r = fail(ENOMEM);
	} else {
		/* One snapshot under the queue's mutex, as the kernel's peek under its lock. */
		r = fastq_peek(&m->q, index, 0, bounce, room, &length, &priority, NULL);
		if (r < 0)
			r = fail((int)-r);
		else if (copy_out_message(NULL, 0, buf, bounce, (size_t)r) < 0)
			r = -1;
		else
			*prio = priority;
	}
	if (bounce != stack)
		free(bounce);
	release(m);
	if (r < 0 && errno == EUCLEAN) {
		give_up(fd);
		return 0;
	}
	*result = r;
	return 1;
}
