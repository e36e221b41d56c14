/* fastq.h - one POSIX message queue in a shared mapping: the queue core of mqfs's fast path.
 *
 * With `mqfs mount MNT -o fastpath`, each queue's messages live in a file the daemon creates
 * (owned by the queue's owner, mode 0600). The owner's processes map it and send, receive
 * and peek with no daemon round trip (the LD_PRELOAD shim, the Python client through
 * ctypes), and the daemon maps it too and runs every FUSE request on the same code. This
 * file and fastq.c are the only implementation of the queue for fast-path queues.
 *
 * The mapping (all offsets fixed at creation from maxmsg and msgsize, see fastq_layout):
 *
 *   header   magic, geometry, a robust process-shared mutex, the ring's head and count packed
 *            in one 64-bit word (the commit point of every change), the free-slot stack's
 *            depth, QSIZE, a generation bumped by every change, futex words, the undo log
 *   ring     maxmsg entries {slot, priority} in receive order from `head`: priority
 *            descending, FIFO within a priority. peek(N) is ring[(head + N) % maxmsg]: O(1).
 *   free     maxmsg slot numbers, a stack
 *   slots    maxmsg slots of {length, priority, payload[msgsize]}
 *
 * Crash consistency. Every change holds the mutex and writes an undo record first. The
 * change becomes visible at one aligned 64-bit store (head+count); before it, nothing a
 * reader trusts has changed; after it, the rest is derived from the record. A process
 * SIGKILLed anywhere leaves the mutex owner-dead; the next locker gets EOWNERDEAD and
 * replays the record (fastq.c, recover()): an unfinished operation is rolled back if it had
 * not committed and finished if it had, so the queue is exactly as before the operation or
 * exactly as after it. Entries move in the ring only by swapping two adjacent 64-bit
 * entries, so the ring is a permutation of the queued slots at every instant and recovery
 * can find the moving entry.
 *
 * Waiting. Receivers sleep on `sent_seq` and senders on `received_seq` with futex_waitv and
 * an absolute CLOCK_REALTIME timeout, which the kernel restarts after a SA_RESTART handler
 * (ERESTARTSYS) and ends with EINTR otherwise, as mq_timedreceive does; a wait never lasts
 * more than FASTQ_RECHECK_NS, so a waker that died holding the mutex strands nobody. Wakes
 * are issued before the mutex is released, so a waker killed after its change committed has
 * already woken the sleepers. Sleepers are counted (a send wakes only if someone sleeps) and
 * the first 32 recorded by thread: one SIGKILLed asleep is taken off the count when a wake
 * finds nobody asleep or a send must know whether a receiver waits (mq_notify's rule).
 *
 * The daemon. While the daemon has anything that depends on this queue (a poller, a
 * notification, a watch, a caller parked in the daemon) it sets `daemon_interest`; every
 * change then bumps `change_seq` and wakes the daemon's watcher thread. A send that makes
 * the queue non-empty while `notify_armed` is set and nobody waits to receive fires mq_notify:
 * the sender signals the registered process itself when it may (before mq_send returns, as
 * the kernel does), else sets `notify_pending` for the daemon to deliver it.
 *
 * Trust. The mapping is writable by the queue's owner, so every value read from it is
 * checked against the geometry the caller trusts (struct fastq, filled from the daemon's
 * own record or checked at attach): a corrupt mapping gives -EUCLEAN, never a wild access.
 * A mapping truncated under the daemon faults (SIGBUS); fastq_guard_install() makes that
 * fault end the operation with -EUCLEAN in a process that asks for it (the daemon).
 *
 * Errors are returned as negative errno values; nothing here sets errno.
 */
#ifndef MQFS_FASTQ_H
#define MQFS_FASTQ_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define FASTQ_MAGIC 0x7166716dU /* "mqfq" */
#define FASTQ_VERSION 1U
#define FASTQ_PRIO_MAX 32768U
#define FASTQ_RECHECK_NS 200000000L /* longest single futex sleep: 0.2 s */

/* What a process knows about one mapping. Geometry comes from the caller (the daemon's
 * record or the MAP ioctl), never from the mapping itself, and bounds every access. */
struct fastq {
	unsigned char *base;
	size_t size;
	uint32_t maxmsg;
	uint32_t msgsize;
	size_t slot_size;
	size_t ring_offset, free_offset, slots_offset;
	int broken; /* a fault or a corrupt value was seen: every call gives -EUCLEAN */
};

/* A snapshot of the queue's state, taken under the mutex. */
struct fastq_state {
	uint64_t generation;
	uint64_t bytes;        /* QSIZE */
	uint32_t count;        /* curmsgs */
	uint32_t head_length;  /* length of the next message to be received (0 if empty) */
	uint32_t recv_waiters; /* processes sleeping in receive / send on the mapping */
	uint32_t send_waiters;
	uint32_t daemon_interest;
	uint32_t notify_pending;
	uint32_t change_seq;
	uint32_t recovered;    /* how many times an owner-dead mutex was recovered */
	uint32_t last_sender;  /* process ids of the last send and receive (0: none yet) */
	uint32_t last_receiver;
	int64_t change_ns;     /* CLOCK_REALTIME of the last send or receive (0: none yet) */
};

/* Bytes of the mapping for this geometry; 0 if it is not representable. */
size_t fastq_layout(uint32_t maxmsg, uint32_t msgsize);

/* Size the file *fd* (which must be empty) and write a fresh, empty queue into it. */
int fastq_create(int fd, uint32_t maxmsg, uint32_t msgsize);

/* Map *fd* read-write and check its header against the geometry the caller trusts. */
int fastq_attach(struct fastq *q, int fd, uint32_t maxmsg, uint32_t msgsize);
void fastq_detach(struct fastq *q);

/* flags for send/receive */
#define FASTQ_NONBLOCK 1u /* EAGAIN instead of waiting */
#define FASTQ_TIMED 2u    /* *deadline is an absolute CLOCK_REALTIME time: ETIMEDOUT after */
#define FASTQ_UPTO 4u     /* receive: any buflen; -EMSGSIZE (nothing taken) if the head is longer */

/* mq_timedsend on the mapping: the caller has checked the descriptor, the priority and the
 * timeout's format (the kernel's order); this checks the priority (EINVAL) and the length
 * (EMSGSIZE) again in that order, then waits for room.
 * Returns 0, -EINVAL, -EMSGSIZE, -EAGAIN, -ETIMEDOUT, -EINTR or -EUCLEAN. */
int fastq_send(struct fastq *q, const void *msg, size_t len, unsigned prio, unsigned flags,
	       const struct timespec *deadline);

/* mq_timedreceive: -EMSGSIZE when buflen < msgsize (the kernel checks before waiting),
 * then waits for a message. Returns its length. */
ssize_t fastq_receive(struct fastq *q, void *buf, size_t buflen, unsigned *prio, unsigned flags,
		      const struct timespec *deadline);

/* Copy up to *buflen* bytes of message *index* (receive order) from byte *offset* without
 * taking it. Returns the bytes copied; *length*, *prio*, *generation* describe the message
 * and the queue at that instant. -EAGAIN: empty; -ENOENT: no message at *index*. */
ssize_t fastq_peek(struct fastq *q, uint64_t index, uint64_t offset, void *buf, size_t buflen,
		   uint32_t *length, uint32_t *prio, uint64_t *generation);

/* Remove message *index* if the queue is still at *generation* (0: any): -ESTALE if not,
 * then -ENOENT if there is no message at *index* (an empty queue too: nothing to wait for).
 * Copies up to *buflen* bytes of it out first. Returns its length. */
ssize_t fastq_remove(struct fastq *q, uint64_t index, uint64_t generation, void *buf,
		     size_t buflen, uint32_t *prio);

/* Hold the mutex across several calls of this thread, which then run under it (the
 * daemon's consistent snapshots: a generation, a count and the messages of one instant).
 * No call in between may wait. Holds nest: each fastq_lock needs its fastq_unlock. */
int fastq_lock(struct fastq *q);
void fastq_unlock(struct fastq *q);

/* The daemon, attaching a mapping it made (or finds on disk in state=DIR): *boot* is this
 * boot's id (/proc/sys/kernel/random/boot_id). A mapping last adopted in another boot gets a
 * fresh mutex, its undo record replayed and no sleepers: 1; same boot: 0, nothing done. */
int fastq_adopt(struct fastq *q, const unsigned char boot[16]);

/* Remove every message (the daemon's unlink of a durable queue, tests). */
int fastq_clear(struct fastq *q);

int fastq_state(struct fastq *q, struct fastq_state *out);

/* Who sleeps in the mapping now (the first FASTQ_SLEEPER_SLOTS recorded): `mqfs who`. */
#define FASTQ_SLEEPER_SLOTS 32
struct fastq_sleeper {
	uint32_t pid, tid;
	uint32_t receiving; /* 1: in receive, 0: in send */
	uint32_t reserved;
	int64_t since_ns;   /* CLOCK_REALTIME */
};
int fastq_sleepers(struct fastq *q, struct fastq_sleeper *out, int max);

/* The daemon's side of waking: set or clear interest; wait until change_seq differs from
 * *seen* or *timeout_ns* passes (0 = return at once): the new change_seq, or -ETIMEDOUT,
 * -EINTR. Clear notify_pending and return whether it was set. */
int fastq_set_interest(struct fastq *q, int interested, int notify_armed);
int64_t fastq_wait_change(struct fastq *q, uint32_t seen, int64_t timeout_ns);
/* What became of the armed notification: 0 nothing; PENDING, the daemon delivers it;
 * FIRED, the sender delivered it (SIGEV_SIGNAL to a process it may signal, SIGEV_NONE). */
#define FASTQ_NOTIFY_PENDING 1
#define FASTQ_NOTIFY_FIRED 2
int fastq_take_notify(struct fastq *q);
/* The registration to arm (the daemon, before fastq_set_interest(..., 1)): the process to
 * signal, sigev_notify, the signal and sigev_value. pid 0: the daemon delivers it. */
int fastq_set_notification(struct fastq *q, uint32_t pid, int32_t sigev_notify, int32_t signo,
			   uint64_t value);
/* This process is the daemon: it never delivers a notification from a send it makes on a
 * caller's behalf (notify_pending is its own to act on). */
void fastq_set_daemon(void);
/* Wake every sleeper of the mapping (the daemon, after a queue is unlinked or on shutdown). */
void fastq_wake_all(struct fastq *q);

/* Make SIGBUS/SIGSEGV inside a fastq call of this process end that call with -EUCLEAN
 * (the daemon, which maps files other users can truncate). Idempotent. */
int fastq_guard_install(void);

/* The daemon: give up on a mutex held longer than *timeout_ns* (a stopped or hostile
 * process of the owner's) with -EBUSY instead of blocking; 0 (the default) waits. */
void fastq_set_lock_timeout(int64_t timeout_ns);

/* Tests: SIGKILL this process when it next reaches crash point *point* (1..FASTQ_CRASH_POINTS,
 * the stores of send, receive and remove, fastq.c's CRASH_POINT); 0 turns it off. */
#define FASTQ_CRASH_POINTS 10
void fastq_crash_at(int point);

/* Check the mapping's invariants under the mutex (tests): 0 or -EUCLEAN. */
int fastq_check(struct fastq *q);

#endif
