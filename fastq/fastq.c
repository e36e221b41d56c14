/* fastq.c - one POSIX message queue in a shared mapping (the design is in fastq.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "fastq.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif

#define HEADER_BYTES 4096u

enum { OP_NONE, OP_SEND, OP_RECEIVE, OP_REMOVE };

/* The undo record: everything recover() needs to put the queue back as before the
 * operation or forward to after it, written before the operation's first store. */
struct undo {
	uint32_t op;      /* written last (release): an OP_NONE record is never replayed */
	uint32_t slot;
	uint32_t prio;
	uint32_t length;
	uint32_t target;  /* SEND: the position (from the new head) the entry ends at */
	uint32_t origin;  /* REMOVE: the position it started from */
	uint32_t old_free;
	uint32_t front;   /* SEND: placed before the head, then moved back */
	uint64_t old_hc;
	uint64_t old_bytes;
};

/* A process asleep in the mapping, so that one SIGKILLed while asleep (it never takes itself
 * off the count) can be told from one still waiting: see reap_waiters(). */
#define WAITER_SLOTS FASTQ_SLEEPER_SLOTS
struct sleeper {
	uint32_t tid;       /* 0: a free slot */
	uint32_t tgid;
	uint32_t receiving; /* 1: counted in recv_waiters, 0: in send_waiters */
	uint32_t reserved;
	int64_t since_ns;   /* CLOCK_REALTIME when it first went to sleep (mqfs who) */
	int64_t slept_ns;   /* ... and when it last did (a fresh one may be on its way in) */
};

struct header {
	uint32_t magic;
	uint32_t version;
	uint32_t maxmsg;
	uint32_t msgsize;
	uint64_t size;
	pthread_mutex_t lock;
	_Alignas(8) uint64_t hc; /* head | count << 32: one store commits a change */
	uint32_t free_count;
	uint32_t recovered;
	uint64_t bytes;
	uint64_t generation;
	uint32_t sent_seq;       /* futex: bumped by every send; receivers sleep on it */
	uint32_t received_seq;   /* futex: bumped by every receive; senders sleep on it */
	uint32_t recv_waiters;
	uint32_t send_waiters;
	uint32_t daemon_interest;
	uint32_t change_seq;     /* futex: the daemon's watcher sleeps on it */
	uint32_t notify_armed;
	uint32_t notify_pending;
	struct undo undo;
	struct sleeper sleepers[WAITER_SLOTS]; /* the first 32 waiters (more are only counted) */
	unsigned char boot[16]; /* the boot the daemon last adopted the mapping in */
	uint32_t last_sender;   /* process ids of the last send and receive (lsipc's LSPID, */
	uint32_t last_receiver; /* LRPID; the sender is mq_notify's si_pid) */
	/* The mq_notify registration the daemon armed (fastq_set_notification), so that the
	 * send that fires it can deliver it itself, before it returns, as the kernel does.
	 * notify_fired tells the daemon that the registration is gone. */
	uint32_t notify_pid;
	int32_t notify_kind; /* sigev_notify */
	int32_t notify_signo;
	uint32_t notify_fired;
	uint64_t notify_value;
	int64_t change_ns; /* CLOCK_REALTIME of the last send or receive: the queue file's times */
};

_Static_assert(sizeof(struct header) <= HEADER_BYTES, "header fits its page");

struct entry { /* one ring cell: moved as one 64-bit word */
	uint32_t slot;
	uint32_t prio;
};

struct slot_header {
	uint32_t length;
	uint32_t prio;
};

/* -- geometry ---------------------------------------------------------------------------- */

static size_t align_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

struct geometry {
	size_t slot_size, ring_offset, free_offset, slots_offset, size;
};

static int geometry_of(uint32_t maxmsg, uint32_t msgsize, struct geometry *g)
{
	if (maxmsg == 0 || maxmsg > (1u << 24))
		return -EINVAL;
	g->slot_size = align_up(sizeof(struct slot_header) + (size_t)msgsize, 8);
	g->ring_offset = HEADER_BYTES;
	g->free_offset = g->ring_offset + (size_t)maxmsg * sizeof(struct entry);
	g->slots_offset = align_up(g->free_offset + (size_t)maxmsg * sizeof(uint32_t), 64);
	if ((SIZE_MAX / 4 - g->slots_offset) / maxmsg < g->slot_size)
		return -ENOMEM;
	g->size = align_up(g->slots_offset + (size_t)maxmsg * g->slot_size, 4096);
	return 0;
}

size_t fastq_layout(uint32_t maxmsg, uint32_t msgsize)
{
	struct geometry g;
	return geometry_of(maxmsg, msgsize, &g) ? 0 : g.size;
}

static struct header *hdr(struct fastq *q) { return (struct header *)q->base; }
static struct entry *ring(struct fastq *q) { return (struct entry *)(q->base + q->ring_offset); }
static uint32_t *free_stack(struct fastq *q) { return (uint32_t *)(q->base + q->free_offset); }
static struct slot_header *slot_at(struct fastq *q, uint32_t slot)
{
	return (struct slot_header *)(q->base + q->slots_offset + (size_t)slot * q->slot_size);
}

static uint32_t hc_head(uint64_t hc) { return (uint32_t)hc; }
static uint32_t hc_count(uint64_t hc) { return (uint32_t)(hc >> 32); }
static uint64_t make_hc(uint32_t head, uint32_t count) { return head | (uint64_t)count << 32; }

static uint64_t load_hc(struct header *h) { return __atomic_load_n(&h->hc, __ATOMIC_ACQUIRE); }

/* A SIGKILL can land between any two instructions, so the stores around the undo record's
 * op and the commit must reach memory in program order: a release store keeps the earlier
 * stores before it, and this fence keeps the compiler from hoisting later ones above it
 * (x86 keeps stores in order; whoever recovers takes the mutex, which orders the rest). */
static void in_order(void) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

static void commit_hc(struct header *h, uint64_t hc)
{
	__atomic_store_n(&h->hc, hc, __ATOMIC_RELEASE);
	in_order();
}

static void begin(struct undo *u, uint32_t op)
{
	__atomic_store_n(&u->op, op, __ATOMIC_RELEASE);
	in_order();
}

/* The ring cell at *position* counted from *head*. */
static struct entry *cell(struct fastq *q, uint32_t head, uint64_t position)
{
	return ring(q) + (head + position) % q->maxmsg;
}

static void swap_cells(struct entry *a, struct entry *b)
{
	uint64_t x, y;
	memcpy(&x, a, 8);
	memcpy(&y, b, 8);
	__atomic_store_n((uint64_t *)a, y, __ATOMIC_RELAXED);
	__atomic_store_n((uint64_t *)b, x, __ATOMIC_RELAXED);
}

/* -- this process ------------------------------------------------------------------------- */

static pid_t own_pid; /* getpid() once per process, not per message */
static __thread pid_t own_tid; /* gettid() once per thread, not per sleep */
static __thread struct fastq *holding; /* the queue whose mutex this thread holds */
static __thread int pinned;             /* fastq_lock's extra holds of it (nesting) */

/* In a child forked inside fastq_lock's hold (its one thread is a copy of the holder): the
 * mutex is still the parent thread's, so the child's calls must take it like anyone's. */
static void after_fork(void)
{
	own_pid = own_tid = 0;
	holding = NULL;
	pinned = 0;
}

__attribute__((constructor)) static void watch_forks(void) { pthread_atfork(NULL, NULL, after_fork); }

static uint32_t self_pid(void)
{
	if (!own_pid)
		own_pid = getpid();
	return (uint32_t)own_pid;
}

static int64_t realtime_ns(void)
{
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now); /* the vDSO: no system call */
	return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* -- test hooks ------------------------------------------------------------------------- */

static int crash_point;

void fastq_crash_at(int point) { crash_point = point; }

#define CRASH_POINT(n)                                                                        \
	do {                                                                                  \
		if (__builtin_expect(crash_point == (n), 0))                                  \
			raise(SIGKILL);                                                       \
	} while (0)

/* -- faults ------------------------------------------------------------------------------ */

static int guard_installed;
static __thread sigjmp_buf *guard_env;
static __thread void *guard_fault;
static struct sigaction chained_segv, chained_bus;

static void guard_handler(int sig, siginfo_t *info, void *context)
{
	if (guard_env) {
		guard_fault = info->si_addr;
		siglongjmp(*guard_env, 1);
	}
	struct sigaction *chained = sig == SIGBUS ? &chained_bus : &chained_segv;
	if ((chained->sa_flags & SA_SIGINFO) && chained->sa_sigaction) {
		chained->sa_sigaction(sig, info, context);
	} else if (chained->sa_handler != SIG_DFL && chained->sa_handler != SIG_IGN) {
		chained->sa_handler(sig);
	} else {
		signal(sig, SIG_DFL); /* returning re-runs the access: the default action */
	}
}

int fastq_guard_install(void)
{
	if (__atomic_exchange_n(&guard_installed, 1, __ATOMIC_ACQ_REL))
		return 0;
	struct sigaction action = {.sa_sigaction = guard_handler, .sa_flags = SA_SIGINFO | SA_NODEFER};
	sigemptyset(&action.sa_mask);
	if (sigaction(SIGSEGV, &action, &chained_segv) || sigaction(SIGBUS, &action, &chained_bus))
		return -errno;
	return 0;
}

static int64_t lock_timeout_ns;

void fastq_set_lock_timeout(int64_t timeout_ns) { lock_timeout_ns = timeout_ns; }

/* -- recovery ---------------------------------------------------------------------------- */

/* Where the entry of *slot* is among the first *count* cells from *head*; count if nowhere. */
static uint32_t find_slot(struct fastq *q, uint32_t head, uint32_t count, uint32_t slot)
{
	for (uint32_t i = 0; i < count; i++)
		if (cell(q, head, i)->slot == slot)
			return i;
	return count;
}

/* Move the entry at *from* to *to* by adjacent swaps: the others keep their order. */
static void move_entry(struct fastq *q, uint32_t head, uint32_t from, uint32_t to, int crash)
{
	while (from < to) {
		swap_cells(cell(q, head, from), cell(q, head, from + 1));
		from++;
		if (crash)
			CRASH_POINT(5);
	}
	while (from > to) {
		swap_cells(cell(q, head, from - 1), cell(q, head, from));
		from--;
		if (crash)
			CRASH_POINT(5);
	}
}

static void wake(uint32_t *word, int n)
{
	syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

static void wake_everyone(struct header *h)
{
	__atomic_add_fetch(&h->sent_seq, 1, __ATOMIC_RELEASE);
	__atomic_add_fetch(&h->received_seq, 1, __ATOMIC_RELEASE);
	__atomic_add_fetch(&h->change_seq, 1, __ATOMIC_RELEASE);
	wake(&h->sent_seq, INT_MAX);
	wake(&h->received_seq, INT_MAX);
	wake(&h->change_seq, INT_MAX);
}

static void reap_waiters(struct header *h, int64_t older_than);

/* Replay the undo record of an operation that did not finish (its process died holding the
 * mutex, or faulted on the caller's buffer): before the commit store, undo; after, finish. */
static void recover(struct fastq *q)
{
	struct header *h = hdr(q);
	uint32_t op = __atomic_load_n(&h->undo.op, __ATOMIC_ACQUIRE);
	if (op == OP_NONE)
		return;
	struct undo record; /* one copy: what is checked is what is used, whoever writes */
	memcpy(&record, &h->undo, sizeof record);
	struct undo *u = &record;
	uint64_t hc = load_hc(h);
	int committed = hc != u->old_hc;
	uint32_t head = hc_head(hc), count = hc_count(hc);
	if (head >= q->maxmsg || count > q->maxmsg || u->old_free > q->maxmsg ||
	    (op != OP_SEND && u->old_free >= q->maxmsg)) { /* a receive pushes a free slot */
		q->broken = 1;
		return;
	}
	switch (op) {
	case OP_SEND:
		if (committed) {
			uint32_t at = find_slot(q, head, count, u->slot);
			if (at < count && u->target < count)
				move_entry(q, head, at, u->target, 0);
			h->free_count = u->old_free - 1;
			h->bytes = u->old_bytes + u->length;
			/* the queue was empty and no receiver sleeps to take it: as do_send */
			if (hc_count(u->old_hc) == 0 && h->notify_armed) {
				if (h->recv_waiters)
					reap_waiters(h, 0);
				if (h->recv_waiters == 0)
					h->notify_pending = 1;
			}
		} else {
			h->free_count = u->old_free;
			h->bytes = u->old_bytes;
		}
		break;
	case OP_REMOVE:
		if (!committed) {
			uint32_t at = find_slot(q, head, count, u->slot);
			if (at < count && u->origin < count)
				move_entry(q, head, at, u->origin, 0);
		}
		/* fall through: after the commit a remove is a receive */
		__attribute__((fallthrough));
	case OP_RECEIVE:
		if (committed) {
			free_stack(q)[u->old_free] = u->slot;
			h->free_count = u->old_free + 1;
			h->bytes = u->old_bytes - u->length;
		} else {
			h->free_count = u->old_free;
			h->bytes = u->old_bytes;
		}
		break;
	}
	h->generation++;
	__atomic_store_n(&h->undo.op, OP_NONE, __ATOMIC_RELEASE);
	wake_everyone(h);
}

/* -- the mutex ----------------------------------------------------------------------------- */

/* Shared between processes, robust (EOWNERDEAD to the next locker). */
static int init_mutex(pthread_mutex_t *m)
{
	pthread_mutexattr_t attr;
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	int r = pthread_mutex_init(m, &attr);
	pthread_mutexattr_destroy(&attr);
	return r;
}

/* glibc keeps a mutex's type in its __kind word, and pthread_mutex_lock aborts the process
 * (an assert) on some values of a type nobody asked for here (priority protection or
 * inheritance). The mapping is writable by the owner's processes, so lock() first checks
 * the word against the one init_mutex gives. (A process changing it between the check
 * and the lock is a window this cannot close.) */
static int expected_kind(void)
{
	static int kind = -1;
	int known = __atomic_load_n(&kind, __ATOMIC_RELAXED);
	if (known < 0) {
		pthread_mutex_t probe;
		init_mutex(&probe);
		known = probe.__data.__kind;
		pthread_mutex_destroy(&probe);
		__atomic_store_n(&kind, known, __ATOMIC_RELAXED);
	}
	return known;
}

static int lock(struct fastq *q)
{
	struct header *h = hdr(q);
	int r;
	if (holding == q) { /* inside fastq_lock: the mutex is ours already */
		pinned++;
		return 0;
	}
	if (__atomic_load_n(&h->lock.__data.__kind, __ATOMIC_RELAXED) != expected_kind()) {
		q->broken = 1;
		return -EUCLEAN;
	}
	if (lock_timeout_ns > 0) {
		struct timespec until;
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += lock_timeout_ns / 1000000000;
		until.tv_nsec += lock_timeout_ns % 1000000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		r = pthread_mutex_clocklock(&h->lock, CLOCK_MONOTONIC, &until);
		if (r == ETIMEDOUT)
			return -EBUSY;
	} else {
		r = pthread_mutex_lock(&h->lock);
	}
	if (r == EOWNERDEAD) {
		recover(q);
		h->recovered++;
		pthread_mutex_consistent(&h->lock);
		r = 0;
		if (q->broken) { /* an undo record no queue can have */
			pthread_mutex_unlock(&h->lock);
			return -EUCLEAN;
		}
	}
	if (r) {
		q->broken = 1; /* ENOTRECOVERABLE, or a mutex someone overwrote */
		return -EUCLEAN;
	}
	holding = q;
	return 0;
}

static void unlock(struct fastq *q)
{
	if (pinned) {
		pinned--;
		return;
	}
	holding = NULL;
	pthread_mutex_unlock(&hdr(q)->lock);
}

/* The ring's state if it is believable, else -EUCLEAN (and the caller unlocks). */
static int read_state(struct fastq *q, uint32_t *head, uint32_t *count)
{
	struct header *h = hdr(q);
	uint64_t hc = load_hc(h);
	*head = hc_head(hc);
	*count = hc_count(hc);
	if (*head >= q->maxmsg || *count > q->maxmsg || h->free_count != q->maxmsg - *count) {
		q->broken = 1;
		return -EUCLEAN;
	}
	return 0;
}

/* lock() then read_state(): 0 with the mutex held, or an error with it released. */
static int lock_state(struct fastq *q, uint32_t *head, uint32_t *count)
{
	int r = lock(q);
	if (r == 0 && (r = read_state(q, head, count)))
		unlock(q);
	return r;
}

/* The slot of the entry at *position* and its length, checked: NULL if the mapping is
 * corrupt. The length is read once: a process of the owner's may change it meanwhile. */
static struct slot_header *message_at(struct fastq *q, uint32_t head, uint64_t position,
				      struct entry *out, uint32_t *length)
{
	memcpy(out, cell(q, head, position), sizeof *out);
	if (out->slot >= q->maxmsg)
		return NULL;
	struct slot_header *s = slot_at(q, out->slot);
	*length = __atomic_load_n(&s->length, __ATOMIC_RELAXED);
	if (*length > q->msgsize)
		return NULL;
	return s;
}

/* -- creation ----------------------------------------------------------------------------- */

int fastq_create(int fd, uint32_t maxmsg, uint32_t msgsize)
{
	struct geometry g;
	int r = geometry_of(maxmsg, msgsize, &g);
	if (r)
		return r;
	if (ftruncate(fd, (off_t)g.size))
		return -errno;
	unsigned char *base = mmap(NULL, g.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED)
		return -errno;
	struct header *h = (struct header *)base;
	memset(h, 0, sizeof *h);
	h->maxmsg = maxmsg;
	h->msgsize = msgsize;
	h->size = g.size;
	r = init_mutex(&h->lock);
	if (r) {
		munmap(base, g.size);
		return -r;
	}
	uint32_t *stack = (uint32_t *)(base + g.free_offset);
	for (uint32_t i = 0; i < maxmsg; i++)
		stack[i] = maxmsg - 1 - i; /* slot 0 is used first */
	h->free_count = maxmsg;
	h->version = FASTQ_VERSION;
	__atomic_store_n(&h->magic, FASTQ_MAGIC, __ATOMIC_RELEASE); /* last: a whole header */
	r = msync(base, HEADER_BYTES, MS_ASYNC) ? -errno : 0;
	munmap(base, g.size);
	return r;
}

int fastq_attach(struct fastq *q, int fd, uint32_t maxmsg, uint32_t msgsize)
{
	struct geometry g;
	int r = geometry_of(maxmsg, msgsize, &g);
	if (r)
		return r;
	struct stat st;
	if (fstat(fd, &st))
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size < (off_t)g.size)
		return -EUCLEAN;
	unsigned char *base = mmap(NULL, g.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED)
		return -errno;
	struct header *h = (struct header *)base;
	if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != FASTQ_MAGIC ||
	    h->version != FASTQ_VERSION || h->maxmsg != maxmsg || h->msgsize != msgsize ||
	    h->size != g.size) {
		munmap(base, g.size);
		return -EUCLEAN;
	}
	*q = (struct fastq){
		.base = base,
		.size = g.size,
		.maxmsg = maxmsg,
		.msgsize = msgsize,
		.slot_size = g.slot_size,
		.ring_offset = g.ring_offset,
		.free_offset = g.free_offset,
		.slots_offset = g.slots_offset,
	};
	return 0;
}

void fastq_detach(struct fastq *q)
{
	if (q->base)
		munmap(q->base, q->size);
	q->base = NULL;
}

/* -- waiting --------------------------------------------------------------------------------- */

static int64_t ns_of(const struct timespec *t) { return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec; }

static struct timespec timespec_of(int64_t ns)
{
	return (struct timespec){.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
}

/* Sleep while *word* is *seen*, until *until_ns* on *clock* at the latest: 0 (woken, changed,
 * or timed out: the caller looks again) or -EINTR (a signal whose handler lacks SA_RESTART:
 * futex_waitv returns ERESTARTSYS, so the kernel restarts it after a SA_RESTART handler). */
static int sleep_on(uint32_t *word, uint32_t seen, int64_t until_ns, int clock)
{
	struct futex_waitv waiter = {
		.val = seen, .uaddr = (uintptr_t)word, .flags = FUTEX_32};
	struct timespec until = timespec_of(until_ns);
	if (syscall(SYS_futex_waitv, &waiter, 1, 0, &until, clock) < 0 && errno == EINTR)
		return -EINTR;
	return 0;
}

/* With the mutex held and the queue not ready: sleep once on *word* (counting ourselves in
 * *waiters*), then take the mutex again. 0: look again; else a negative errno, mutex released. */
static int wait_once(struct fastq *q, uint32_t *word, uint32_t *waiters, unsigned flags,
		     const struct timespec *deadline, int64_t *since)
{
	struct timespec now_ts;
	clock_gettime(CLOCK_REALTIME, &now_ts);
	int64_t now = ns_of(&now_ts), until = now + FASTQ_RECHECK_NS;
	if (!*since)
		*since = now; /* the first sleep of this call: what `mqfs who` shows */
	if (flags & FASTQ_TIMED) {
		int64_t end = ns_of(deadline);
		if (end <= now) {
			unlock(q);
			return -ETIMEDOUT;
		}
		if (end < until)
			until = end;
	}
	uint32_t seen = __atomic_load_n(word, __ATOMIC_ACQUIRE);
	struct header *h = hdr(q);
	if (!own_tid)
		own_tid = gettid();
	uint32_t tid = (uint32_t)own_tid;
	struct sleeper *slot = NULL;
	for (int i = 0; i < WAITER_SLOTS && !slot; i++)
		if (h->sleepers[i].tid == 0)
			slot = &h->sleepers[i];
	if (slot)
		*slot = (struct sleeper){.tid = tid, .tgid = self_pid(),
					 .receiving = waiters == &h->recv_waiters, .since_ns = *since,
					 .slept_ns = now};
	(*waiters)++;
	unlock(q);
	int r = sleep_on(word, seen, until, CLOCK_REALTIME);
	int l = lock(q);
	if (l)
		return l;
	/* Take ourselves off, unless reap_waiters() did (it never reaps a live thread, but
	 * a thread of another pid namespace looks dead to it). */
	if (!slot || slot->tid == tid) {
		if (slot)
			slot->tid = 0;
		if (*waiters)
			(*waiters)--;
	}
	if (r) {
		unlock(q);
		return r;
	}
	return 0;
}

#define FRESH_SLEEP_NS 1000000 /* 1 ms: far longer than going from the mutex into the futex */

#ifndef FASTQ_SPINS
#define FASTQ_SPINS 200 /* a few microseconds: less than a futex sleep and wake-up */
#endif

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/* Before the first sleep of a call, with the mutex held: let it go and watch the count for
 * a moment (a process on another CPU may be about to send or receive), then take the mutex
 * back to look again. 0, or lock()'s error (the mutex is not held then). Once per call, so
 * that a long wait is a sleep. */
static int spin(struct fastq *q, int for_message)
{
	struct header *h = hdr(q);
	unlock(q);
	int ready = 0;
	for (int i = 0; i < FASTQ_SPINS && !ready; i++) {
		uint32_t count = hc_count(load_hc(h));
		ready = for_message ? count > 0 : count < q->maxmsg;
		if (!ready)
			cpu_relax();
	}
	return lock(q);
}

/* Forget the sleepers that are gone (SIGKILLed asleep: they never took themselves off the
 * counts), of those that went to sleep before *older_than* (0: all). Costs a tgkill(…, 0)
 * per sleeper looked at, so it runs only where a stale count would be wrong: before a send
 * decides that nobody waits to receive (mq_notify), and when a wake found nobody asleep.
 * Mutex held. */
static void reap_waiters(struct header *h, int64_t older_than)
{
	for (int i = 0; i < WAITER_SLOTS; i++) {
		struct sleeper *s = &h->sleepers[i];
		if (s->tid && (!older_than || s->slept_ns < older_than) &&
		    syscall(SYS_tgkill, s->tgid, s->tid, 0) < 0 && errno == ESRCH) {
			uint32_t *count = s->receiving ? &h->recv_waiters : &h->send_waiters;
			if (*count)
				(*count)--;
			s->tid = 0;
		}
	}
}

/* The daemon leaves mq_notify's signal to itself (it sends on callers' behalf). */
static int in_daemon;

void fastq_set_daemon(void) { in_daemon = 1; }

/* The send that made the queue non-empty with nobody waiting to receive: mq_notify fires.
 * The sender delivers SIGEV_SIGNAL itself when it may signal the registered process, so
 * that the signal is queued before mq_send returns (si_code SI_MESGQ, si_pid the sender),
 * and SIGEV_NONE just ends; the daemon delivers the rest (SIGEV_THREAD, another user's
 * process, a send by the daemon) from notify_pending. Mutex held. */
static void fire_notification(struct header *h)
{
	int32_t kind = h->notify_kind, signo = h->notify_signo;
	if (!in_daemon && h->notify_pid && (kind == SIGEV_NONE || kind == SIGEV_SIGNAL)) {
		int sent = 1;
		if (kind == SIGEV_SIGNAL && signo > 0) {
			siginfo_t info;
			memset(&info, 0, sizeof info);
			info.si_signo = signo;
			info.si_code = SI_MESGQ;
			info.si_value.sival_ptr = (void *)(uintptr_t)h->notify_value;
			info.si_pid = (pid_t)self_pid();
			info.si_uid = getuid();
			sent = syscall(SYS_rt_sigqueueinfo, (pid_t)h->notify_pid, signo, &info) == 0 ||
			       errno == ESRCH; /* the kernel signals a dead process: nothing */
		}
		if (sent) {
			h->notify_armed = 0;
			h->notify_fired = 1;
			return;
		}
	}
	h->notify_pending = 1;
}

/* After a change: wake who sleeps on it, the daemon if it listens. Called with the mutex
 * held, so that a process killed after its change committed has woken everyone already. */
static void announce(struct header *h, uint32_t *word, uint32_t waiters)
{
	__atomic_add_fetch(word, 1, __ATOMIC_RELEASE);
	if (waiters && syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0) == 0) {
		/* Counted, yet nobody asleep: some may be dead, or on their way into the futex
		 * (they will see the change and not sleep): a busy queue meets the second case
		 * at every other message. Only sleepers that went to sleep a while ago can be
		 * the first case; a tgkill tells for each. */
		reap_waiters(h, realtime_ns() - FRESH_SLEEP_NS);
	}
	if (h->daemon_interest) {
		__atomic_add_fetch(&h->change_seq, 1, __ATOMIC_RELEASE);
		wake(&h->change_seq, INT_MAX);
	}
}

/* A waiter that leaves without taking what it was woken for passes the wake on. */
static void pass_on(struct fastq *q, uint32_t *word, uint32_t waiters, int ready)
{
	(void)q;
	if (ready && waiters)
		wake(word, 1);
}

/* The queue is full for a send (empty for a receive: *receiving*), mutex held: EAGAIN if the
 * call may not wait; else, the first time, watch for a moment (spin), then sleep. 0: look
 * again (mutex held); else a negative errno (mutex released). */
static int not_ready(struct fastq *q, int receiving, unsigned flags,
		     const struct timespec *deadline, int *spun, int64_t *since)
{
	struct header *h = hdr(q);
	uint32_t *word = receiving ? &h->sent_seq : &h->received_seq;
	uint32_t *waiters = receiving ? &h->recv_waiters : &h->send_waiters;
	if (flags & FASTQ_NONBLOCK) {
		unlock(q);
		return -EAGAIN;
	}
	if (!(*spun)++)
		return spin(q, receiving);
	int r = wait_once(q, word, waiters, flags, deadline, since);
	if (r)
		pass_on(q, word, *waiters, 0);
	return r;
}

/* -- the operations ------------------------------------------------------------------------- */

/* The position, from the head, where a message of priority *prio* goes: after every message
 * of priority >= prio. The ring is sorted, so a binary search (O(log n)); O(1) for the usual
 * send at the lowest priority queued. */
static uint32_t insertion_point(struct fastq *q, uint32_t head, uint32_t count, uint32_t prio)
{
	if (count == 0 || cell(q, head, count - 1)->prio >= prio)
		return count;
	uint32_t low = 0, high = count - 1; /* the answer is in [low, high] */
	while (low < high) {
		uint32_t mid = low + (high - low) / 2;
		if (cell(q, head, mid)->prio >= prio)
			low = mid + 1;
		else
			high = mid;
	}
	return low;
}

static ssize_t do_send(struct fastq *q, const void *msg, size_t len, unsigned prio, unsigned flags,
		       const struct timespec *deadline)
{
	if (prio >= FASTQ_PRIO_MAX) /* the kernel's order: EINVAL before EMSGSIZE */
		return -EINVAL;
	if (len > q->msgsize)
		return -EMSGSIZE;
	struct header *h = hdr(q);
	int r = lock(q);
	if (r)
		return r;
	uint32_t head, count;
	int64_t since = 0;
	int spun = 0;
	for (;;) {
		if ((r = read_state(q, &head, &count)))
			goto out;
		if (count < q->maxmsg)
			break;
		if ((r = not_ready(q, 0, flags, deadline, &spun, &since)))
			return r;
	}
	uint32_t free_count = q->maxmsg - count; /* == h->free_count (read_state), read once */
	uint32_t slot = free_stack(q)[free_count - 1];
	if (slot >= q->maxmsg) {
		q->broken = 1;
		r = -EUCLEAN;
		goto out;
	}
	uint32_t target = insertion_point(q, head, count, prio);
	int front = count > 0 && target <= count / 2;
	struct undo *u = &h->undo;
	*u = (struct undo){.slot = slot, .prio = prio, .length = (uint32_t)len, .target = target,
			   .old_free = free_count, .front = (uint32_t)front,
			   .old_hc = make_hc(head, count), .old_bytes = h->bytes};
	begin(u, OP_SEND);
	CRASH_POINT(1);
	struct slot_header *s = slot_at(q, slot);
	s->length = (uint32_t)len;
	s->prio = prio;
	memcpy(s + 1, msg, len); /* may fault on the caller's buffer: fault() rolls back */
	h->free_count = free_count - 1;
	CRASH_POINT(2);
	uint32_t new_head = front ? (head + q->maxmsg - 1) % q->maxmsg : head;
	struct entry e = {.slot = slot, .prio = prio};
	memcpy(cell(q, new_head, front ? 0 : count), &e, sizeof e);
	CRASH_POINT(3);
	commit_hc(h, make_hc(new_head, count + 1));
	CRASH_POINT(4);
	move_entry(q, new_head, front ? 0 : count, target, 1);
	h->bytes += len;
	h->generation++;
	h->last_sender = self_pid();
	h->change_ns = realtime_ns();
	CRASH_POINT(6);
	if (count == 0 && h->notify_armed) {
		if (h->recv_waiters)
			reap_waiters(h, 0);
		if (h->recv_waiters == 0)
			fire_notification(h);
	}
	__atomic_store_n(&u->op, OP_NONE, __ATOMIC_RELEASE);
	announce(h, &h->sent_seq, h->recv_waiters);
	r = 0;
out:
	unlock(q);
	return r;
}

/* Take the message at *position* (0: the head) out of the ring. Mutex held, state read. */
static ssize_t take(struct fastq *q, uint32_t head, uint32_t count, uint64_t position, void *buf,
		    size_t buflen, unsigned *prio)
{
	struct header *h = hdr(q);
	struct entry e;
	uint32_t length;
	struct slot_header *s = message_at(q, head, position, &e, &length);
	if (!s) {
		q->broken = 1;
		return -EUCLEAN;
	}
	struct undo *u = &h->undo;
	*u = (struct undo){.slot = e.slot, .prio = e.prio, .length = length,
			   .origin = (uint32_t)position, .old_free = q->maxmsg - count,
			   .old_hc = make_hc(head, count), .old_bytes = h->bytes};
	begin(u, position ? OP_REMOVE : OP_RECEIVE);
	CRASH_POINT(7);
	size_t copy = length < buflen ? length : buflen;
	memcpy(buf, s + 1, copy); /* may fault on the caller's buffer: fault() rolls back */
	if (prio)
		*prio = s->prio;
	CRASH_POINT(8);
	move_entry(q, head, (uint32_t)position, 0, 1);
	commit_hc(h, make_hc((head + 1) % q->maxmsg, count - 1));
	CRASH_POINT(9);
	free_stack(q)[q->maxmsg - count] = e.slot; /* indexes from the checked count only */
	h->free_count = q->maxmsg - count + 1;
	h->bytes -= length;
	h->generation++;
	h->last_receiver = self_pid();
	h->change_ns = realtime_ns();
	CRASH_POINT(10);
	__atomic_store_n(&u->op, OP_NONE, __ATOMIC_RELEASE);
	announce(h, &h->received_seq, h->send_waiters);
	return length;
}

static ssize_t do_receive(struct fastq *q, void *buf, size_t buflen, unsigned *prio, unsigned flags,
			  const struct timespec *deadline)
{
	if (buflen < q->msgsize && !(flags & FASTQ_UPTO))
		return -EMSGSIZE;
	int r = lock(q);
	if (r)
		return r;
	uint32_t head, count;
	ssize_t got;
	int64_t since = 0;
	int spun = 0;
	for (;;) {
		if ((got = read_state(q, &head, &count)))
			goto out;
		if (count > 0)
			break;
		if ((r = not_ready(q, 1, flags, deadline, &spun, &since)))
			return r;
	}
	if (flags & FASTQ_UPTO) {
		struct entry e;
		uint32_t length;
		struct slot_header *s = message_at(q, head, 0, &e, &length);
		if (s && length > buflen) {
			got = -EMSGSIZE;
			goto out;
		}
	}
	got = take(q, head, count, 0, buf, buflen, prio);
out:
	unlock(q);
	return got;
}

static ssize_t do_peek(struct fastq *q, uint64_t index, uint64_t offset, void *buf, size_t buflen,
		       uint32_t *length, uint32_t *prio, uint64_t *generation)
{
	uint32_t head, count;
	ssize_t got = lock_state(q, &head, &count);
	if (got)
		return got;
	if (generation)
		*generation = hdr(q)->generation;
	if (count == 0) {
		got = -EAGAIN;
		goto out;
	}
	if (index >= count) {
		got = -ENOENT;
		goto out;
	}
	struct entry e;
	uint32_t checked;
	struct slot_header *s = message_at(q, head, index, &e, &checked);
	if (!s) {
		q->broken = 1;
		got = -EUCLEAN;
		goto out;
	}
	if (length)
		*length = checked;
	if (prio)
		*prio = s->prio;
	size_t copy = offset < checked ? checked - offset : 0;
	if (copy > buflen)
		copy = buflen;
	memcpy(buf, (unsigned char *)(s + 1) + offset, copy);
	got = (ssize_t)copy;
out:
	unlock(q);
	return got;
}

static ssize_t do_remove(struct fastq *q, uint64_t index, uint64_t generation, void *buf,
			 size_t buflen, uint32_t *prio)
{
	uint32_t head, count;
	ssize_t got = lock_state(q, &head, &count);
	if (got)
		return got;
	if (generation && hdr(q)->generation != generation)
		got = -ESTALE;
	else if (index >= count) /* an empty queue too: nothing to wait for (the daemon's REMOVE) */
		got = -ENOENT;
	else
		got = take(q, head, count, index, buf, buflen, prio);
	unlock(q);
	return got;
}

static ssize_t do_clear(struct fastq *q)
{
	uint32_t head, count;
	ssize_t r;
	do {
		char none;
		if ((r = lock_state(q, &head, &count)))
			return r;
		if (count > 0)
			r = take(q, head, count, 0, &none, 0, NULL);
		unlock(q);
	} while (r >= 0 && count > 1);
	return r < 0 ? r : 0;
}

static ssize_t do_state(struct fastq *q, struct fastq_state *out)
{
	uint32_t head, count;
	int r = lock_state(q, &head, &count);
	if (r)
		return r;
	struct header *h = hdr(q);
	struct entry e;
	uint32_t length = 0;
	struct slot_header *s = count ? message_at(q, head, 0, &e, &length) : NULL;
	if (count && !s) {
		q->broken = 1;
		r = -EUCLEAN;
	} else {
		*out = (struct fastq_state){
			.generation = h->generation, .bytes = h->bytes, .count = count,
			.head_length = length, .recv_waiters = h->recv_waiters,
			.send_waiters = h->send_waiters, .daemon_interest = h->daemon_interest,
			.notify_pending = h->notify_pending, .change_seq = h->change_seq,
			.recovered = h->recovered, .last_sender = h->last_sender,
			.last_receiver = h->last_receiver, .change_ns = h->change_ns};
	}
	unlock(q);
	return r;
}

static ssize_t do_check(struct fastq *q)
{
	uint32_t head, count;
	int r = lock_state(q, &head, &count);
	if (r)
		return r;
	struct header *h = hdr(q);
	uint64_t bytes = 0;
	unsigned char *seen = calloc(q->maxmsg, 1);
	if (!seen) {
		r = -ENOMEM;
		goto out;
	}
	uint32_t last_prio = UINT32_MAX;
	for (uint32_t i = 0; i < count && !r; i++) {
		struct entry e;
		uint32_t length;
		struct slot_header *s = message_at(q, head, i, &e, &length);
		if (!s || seen[e.slot] || s->prio != e.prio || e.prio > last_prio)
			r = -EUCLEAN;
		else {
			seen[e.slot] = 1;
			bytes += length;
			last_prio = e.prio;
		}
	}
	for (uint32_t i = 0; i < q->maxmsg - count && !r; i++) {
		uint32_t slot = free_stack(q)[i];
		if (slot >= q->maxmsg || seen[slot])
			r = -EUCLEAN;
		else
			seen[slot] = 1;
	}
	if (!r && (bytes != h->bytes || __atomic_load_n(&h->undo.op, __ATOMIC_ACQUIRE) != OP_NONE))
		r = -EUCLEAN;
	free(seen);
out:
	unlock(q);
	return r;
}

/* -- the guard around every public call ------------------------------------------------------- */

/* After a fault inside a guarded call: the mapping itself (truncated under us) breaks the
 * queue for this process; the caller's buffer is EFAULT, the operation undone. */
static ssize_t fault(struct fastq *q)
{
	sigset_t faults;
	sigemptyset(&faults);
	sigaddset(&faults, SIGSEGV);
	sigaddset(&faults, SIGBUS);
	pthread_sigmask(SIG_UNBLOCK, &faults, NULL);
	unsigned char *at = guard_fault;
	if (at >= q->base && at < q->base + q->size) {
		q->broken = 1;
		holding = NULL; /* the mutex is in the lost pages: leave it */
		pinned = 0;
		return -EUCLEAN;
	}
	if (holding == q) {
		recover(q);
		pinned = 0;
		unlock(q);
	}
	return -EFAULT;
}

#define GUARDED(q, call)                                                                      \
	do {                                                                                  \
		if ((q)->broken || !(q)->base)                                                \
			return -EUCLEAN;                                                      \
		if (!__atomic_load_n(&guard_installed, __ATOMIC_RELAXED))                     \
			return (call);                                                        \
		sigjmp_buf here;                                                              \
		sigjmp_buf *outer = guard_env;                                                \
		if (sigsetjmp(here, 0)) {                                                     \
			guard_env = outer;                                                    \
			return fault(q);                                                      \
		}                                                                             \
		guard_env = &here;                                                            \
		ssize_t result_ = (call);                                                     \
		guard_env = outer;                                                            \
		return result_;                                                               \
	} while (0)

int fastq_send(struct fastq *q, const void *msg, size_t len, unsigned prio, unsigned flags,
	       const struct timespec *deadline)
{
	GUARDED(q, do_send(q, msg, len, prio, flags, deadline));
}

ssize_t fastq_receive(struct fastq *q, void *buf, size_t buflen, unsigned *prio, unsigned flags,
		      const struct timespec *deadline)
{
	GUARDED(q, do_receive(q, buf, buflen, prio, flags, deadline));
}

ssize_t fastq_peek(struct fastq *q, uint64_t index, uint64_t offset, void *buf, size_t buflen,
		   uint32_t *length, uint32_t *prio, uint64_t *generation)
{
	GUARDED(q, do_peek(q, index, offset, buf, buflen, length, prio, generation));
}

ssize_t fastq_remove(struct fastq *q, uint64_t index, uint64_t generation, void *buf,
		     size_t buflen, uint32_t *prio)
{
	GUARDED(q, do_remove(q, index, generation, buf, buflen, prio));
}

int fastq_clear(struct fastq *q) { GUARDED(q, do_clear(q)); }

int fastq_state(struct fastq *q, struct fastq_state *out) { GUARDED(q, do_state(q, out)); }

int fastq_check(struct fastq *q) { GUARDED(q, do_check(q)); }

static ssize_t do_set_interest(struct fastq *q, int interested, int notify_armed)
{
	int r = lock(q);
	if (r)
		return r;
	struct header *h = hdr(q);
	h->daemon_interest = (uint32_t)interested;
	h->notify_armed = (uint32_t)notify_armed;
	if (!notify_armed)
		h->notify_pending = 0;
	unlock(q);
	return 0;
}

int fastq_set_interest(struct fastq *q, int interested, int notify_armed)
{
	GUARDED(q, do_set_interest(q, interested, notify_armed));
}

static ssize_t do_take_notify(struct fastq *q)
{
	int r = lock(q);
	if (r)
		return r;
	struct header *h = hdr(q);
	/* 0, 1 or 2 whatever the mapping holds: not an errno */
	r = h->notify_pending ? FASTQ_NOTIFY_PENDING : h->notify_fired ? FASTQ_NOTIFY_FIRED : 0;
	h->notify_pending = 0;
	h->notify_fired = 0;
	if (r)
		h->notify_armed = 0; /* a registration fires once */
	unlock(q);
	return r;
}

int fastq_take_notify(struct fastq *q) { GUARDED(q, do_take_notify(q)); }

static ssize_t do_wait_change(struct fastq *q, uint32_t seen, int64_t timeout_ns)
{
	uint32_t *word = &hdr(q)->change_seq;
	uint32_t now_seq = __atomic_load_n(word, __ATOMIC_ACQUIRE);
	if (now_seq != seen || timeout_ns <= 0)
		return now_seq != seen ? (ssize_t)now_seq : -ETIMEDOUT;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int r = sleep_on(word, seen, ns_of(&now) + timeout_ns, CLOCK_MONOTONIC);
	if (r)
		return r;
	now_seq = __atomic_load_n(word, __ATOMIC_ACQUIRE);
	return now_seq != seen ? (ssize_t)now_seq : -ETIMEDOUT;
}

int64_t fastq_wait_change(struct fastq *q, uint32_t seen, int64_t timeout_ns)
{
	GUARDED(q, do_wait_change(q, seen, timeout_ns));
}

static ssize_t do_wake_all(struct fastq *q)
{
	wake_everyone(hdr(q));
	return 0;
}

void fastq_wake_all(struct fastq *q)
{
	if (q->broken || !q->base)
		return;
	if (!__atomic_load_n(&guard_installed, __ATOMIC_RELAXED)) {
		do_wake_all(q);
		return;
	}
	sigjmp_buf here;
	sigjmp_buf *outer = guard_env;
	if (sigsetjmp(here, 0)) {
		guard_env = outer;
		fault(q);
		return;
	}
	guard_env = &here;
	do_wake_all(q);
	guard_env = outer;
}

/* The mutex is held from the first lock() (pinned counts the calls inside). */
static ssize_t do_pin(struct fastq *q) { return lock(q); }

int fastq_lock(struct fastq *q) { GUARDED(q, do_pin(q)); }

void fastq_unlock(struct fastq *q)
{
	if (holding == q)
		unlock(q);
}

static ssize_t do_adopt(struct fastq *q, const unsigned char boot[16])
{
	struct header *h = hdr(q);
	if (!memcmp(h->boot, boot, sizeof h->boot))
		return 0;
	/* Another boot: no process alive can hold the mutex or sleep on the futexes, but the
	 * mutex may still name a thread of that boot (its death was never seen), and the counts
	 * may include its sleepers. A fresh mutex, the undo record replayed, no sleepers. */
	int r = init_mutex(&h->lock);
	if (r)
		return -r;
	recover(q);
	h->recv_waiters = h->send_waiters = 0;
	memset(h->sleepers, 0, sizeof h->sleepers);
	memcpy(h->boot, boot, sizeof h->boot);
	return 1;
}

int fastq_adopt(struct fastq *q, const unsigned char boot[16]) { GUARDED(q, do_adopt(q, boot)); }

static ssize_t do_sleepers(struct fastq *q, struct fastq_sleeper *out, int max)
{
	int r = lock(q);
	if (r)
		return r;
	struct header *h = hdr(q);
	int n = 0;
	for (int i = 0; i < WAITER_SLOTS && n < max; i++) {
		struct sleeper *s = &h->sleepers[i];
		if (s->tid)
			out[n++] = (struct fastq_sleeper){.pid = s->tgid, .tid = s->tid,
							  .receiving = s->receiving,
							  .since_ns = s->since_ns};
	}
	unlock(q);
	return n;
}

int fastq_sleepers(struct fastq *q, struct fastq_sleeper *out, int max)
{
	GUARDED(q, do_sleepers(q, out, max));
}

static ssize_t do_set_notification(struct fastq *q, uint32_t pid, int32_t kind, int32_t signo,
				   uint64_t value)
{
	int r = lock(q);
	if (r)
		return r;
	struct header *h = hdr(q);
	h->notify_pid = pid;
	h->notify_kind = kind;
	h->notify_signo = signo;
	h->notify_value = value;
	h->notify_fired = 0;
	unlock(q);
	return 0;
}

int fastq_set_notification(struct fastq *q, uint32_t pid, int32_t sigev_notify, int32_t signo,
			   uint64_t value)
{
	GUARDED(q, do_set_notification(q, pid, sigev_notify, signo, value));
}
