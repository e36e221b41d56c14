/* mqfs.h - the mqfs ioctl interface for C programs.
 *
 * The same numbers and layouts as mqfs/wire.py (a test compiles this header and compares).
 * Use on MNT/NAME/queue descriptors (PEEK, SEND, RECEIVE, GETATTR, SETATTR, SETPRIO, ...,
 * REMOVE) and on the mount's root directory (CREATE). FUSE forwards only restricted ioctls,
 * so every struct is fixed-size and below 16384 bytes: at 16384 _IOC_SIZE would silently
 * wrap to 0.
 *
 * Errors come back in errno, as from the mq_* calls: PEEK gives EAGAIN (queue empty),
 * ENOENT (no message at that index) and EBADF (descriptor not open for reading).
 */
#ifndef MQFS_H
#define MQFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>

#define MQFS_IOC_MAGIC 'Q'
#define MQFS_CHUNK 16320 /* payload bytes per PEEK/SEND/RECEIVE call */

struct mqfs_attr {       /* struct mq_attr, fixed-width */
	int64_t flags;       /* O_NONBLOCK or 0: the only flag SETATTR changes */
	int64_t maxmsg;
	int64_t msgsize;
	int64_t curmsgs;
	int64_t reserved[4];
};

struct mqfs_peek {
	uint64_t index;      /* in: position in receive order, 0 = next to be received */
	uint64_t offset;     /* in: byte offset into that message */
	uint64_t msg_len;    /* out: the message's total length */
	uint32_t msg_prio;   /* out: its priority */
	uint32_t copied;     /* out: bytes valid in data (also the ioctl's return value) */
	uint8_t data[MQFS_CHUNK];
};

#define MQFS_XFER_TIMED 1u /* tv_sec/tv_nsec: absolute CLOCK_REALTIME deadline */

struct mqfs_xfer {
	uint64_t msg_len;    /* SEND: whole message length; RECEIVE in: buffer size, out: length */
	uint64_t offset;     /* offset of this chunk in the message */
	uint64_t xfer_id;    /* 0 to start; the id the first reply gave for further chunks */
	int64_t tv_sec;      /* deadline when flags & MQFS_XFER_TIMED */
	int64_t tv_nsec;
	uint32_t msg_prio;   /* SEND in / RECEIVE out */
	uint32_t flags;      /* MQFS_XFER_TIMED or 0; any other bit is EINVAL */
	uint32_t chunk_len;  /* bytes valid in data */
	uint32_t reserved;
	uint8_t data[MQFS_CHUNK];
};

#define MQFS_CREATE_EXCL 1u /* O_EXCL */
#define MQFS_CREATE_ATTR 2u /* use maxmsg/msgsize, as a non-NULL mq_attr */

struct mqfs_create {
	char name[256];      /* NUL-terminated, without the leading slash */
	uint32_t mode;       /* used as given: apply the umask first, as mq_open does */
	uint32_t flags;      /* MQFS_CREATE_*; any other bit is EINVAL */
	int64_t maxmsg;
	int64_t msgsize;
};

#define MQFS_NOTIFY_UNREGISTER 0u /* mq_notify(mqd, NULL) */
#define MQFS_NOTIFY_REGISTER 1u   /* mq_notify(mqd, &sev) */

struct mqfs_notify {        /* struct sigevent, flattened */
	uint32_t action;
	int32_t sigev_notify;   /* SIGEV_NONE, SIGEV_SIGNAL or SIGEV_THREAD (the ioctl then */
	                        /* returns the id for MQFS_IOC_NOTIFY_WAIT; no signal is sent) */
	int32_t sigev_signo;
	uint32_t reserved;
	uint64_t sigev_value;   /* sival_ptr/sival_int, delivered in si_value */
};

#define MQFS_NOTIFY_FIRED 1u /* mqfs_notify_wait.outcome: run the function */
#define MQFS_NOTIFY_ENDED 2u /* unregistered, closed by the process, or queue destroyed */

struct mqfs_notify_wait {   /* NOTIFY_WAIT: the daemon's half of SIGEV_THREAD */
	uint32_t id;            /* in: what MQFS_IOC_NOTIFY returned for SIGEV_THREAD */
	uint32_t outcome;       /* out: MQFS_NOTIFY_FIRED or MQFS_NOTIFY_ENDED */
	uint64_t sigev_value;   /* out: the registration's value */
};

#define MQFS_BATCH_MORE 1u /* more messages follow: call again with index = next */

struct mqfs_batch {          /* PEEK_BATCH: many messages per call, for dumps */
	uint64_t index;          /* in: first message wanted, in receive order */
	uint64_t next;           /* out: the index to ask for next */
	uint64_t generation;     /* out: changes whenever the queue does */
	uint32_t max_count;      /* in: at most this many records (0: as many as fit) */
	uint32_t count;          /* out: records in data */
	uint32_t flags;          /* out: MQFS_BATCH_MORE */
	uint32_t used;           /* out: bytes of data used */
	uint8_t data[MQFS_CHUNK];
};

/* data holds `count` record headers, then the records' bytes back to back: record i's
 * bytes start at data + count * sizeof(struct mqfs_batch_record) + the chunk_lens of
 * records 0..i-1. */
struct mqfs_batch_record {
	uint64_t msg_len;        /* the whole message's length */
	uint32_t msg_prio;
	uint32_t chunk_len;      /* < msg_len only for a message too big for one batch: */
};                           /* read the rest with MQFS_IOC_PEEK by offset */

#define MQFS_WAIT_UNLINKED 2u /* mqfs_wait.flags out: the queue's name is gone */

struct mqfs_wait {           /* WAIT: block until the queue changes (for watchers) */
	uint64_t generation;     /* in: the generation seen last; out: the current one */
	int64_t tv_sec;          /* deadline when flags & MQFS_XFER_TIMED */
	int64_t tv_nsec;
	uint32_t flags;          /* in: MQFS_XFER_TIMED or 0 (any other bit is EINVAL); */
	                         /* out: MQFS_WAIT_UNLINKED once the queue is unlinked */
	uint32_t reserved;
};

#define MQFS_REMOVE_HEAD 224 /* bytes of the removed message a REMOVE reply carries */

struct mqfs_remove {          /* REMOVE: take one message out of the middle (mqfs rm-msg) */
	uint64_t index;           /* in: the message, by position in receive order */
	uint64_t generation;      /* in: the generation it was seen at (PEEK_BATCH, WAIT); */
	                          /* out: the queue's generation after the removal */
	uint64_t msg_len;         /* out: the removed message's length */
	uint32_t msg_prio;        /* out: its priority */
	uint32_t copied;          /* out: bytes of its head valid in data */
	uint8_t data[MQFS_REMOVE_HEAD];
};

#define MQFS_IOC_NOOP    _IO(MQFS_IOC_MAGIC, 0)
#define MQFS_IOC_GETATTR _IOR(MQFS_IOC_MAGIC, 1, struct mqfs_attr)
#define MQFS_IOC_SETATTR _IOWR(MQFS_IOC_MAGIC, 2, struct mqfs_attr)
#define MQFS_IOC_SETPRIO _IOW(MQFS_IOC_MAGIC, 3, uint32_t)
#define MQFS_IOC_PEEK    _IOWR(MQFS_IOC_MAGIC, 4, struct mqfs_peek)
#define MQFS_IOC_SEND    _IOWR(MQFS_IOC_MAGIC, 5, struct mqfs_xfer)
#define MQFS_IOC_RECEIVE _IOWR(MQFS_IOC_MAGIC, 6, struct mqfs_xfer)
#define MQFS_IOC_CREATE  _IOW(MQFS_IOC_MAGIC, 7, struct mqfs_create)
/* PEEK, SEND and RECEIVE also take a shorter struct: the same header and a data[] of any
 * length >= 1 (SEND: >= 0), with that total size in the command. The kernel copies
 * _IOC_SIZE bytes each way, so small messages need not move 16 KiB per call. */
#define MQFS_IOC_SIZED(cmd, size) \
	(((cmd) & ~(_IOC_SIZEMASK << _IOC_SIZESHIFT)) | ((unsigned long)(size) << _IOC_SIZESHIFT))
#define MQFS_PEEK_HEADER_SIZE offsetof(struct mqfs_peek, data)
#define MQFS_XFER_HEADER_SIZE offsetof(struct mqfs_xfer, data)

#define MQFS_IOC_NOTIFY  _IOW(MQFS_IOC_MAGIC, 8, struct mqfs_notify)
#define MQFS_IOC_PEEK_BATCH _IOWR(MQFS_IOC_MAGIC, 9, struct mqfs_batch)
#define MQFS_IOC_WAIT    _IOWR(MQFS_IOC_MAGIC, 10, struct mqfs_wait)
/* From now on read() of this descriptor receives a message; until then it returns the
 * status line, as /dev/mqueue/NAME does, so that reading files never consumes anything. */
#define MQFS_IOC_RECEIVE_ON_READ _IO(MQFS_IOC_MAGIC, 11)
/* Block until SIGEV_THREAD registration `id` (through this open file or a dup of it) fires
 * or ends. Counted against the caller's blocked_max (EAGAIN); ENOENT: no such id here;
 * EBUSY: another caller waits for it; ENOTCONN: the daemon is stopping. */
#define MQFS_IOC_NOTIFY_WAIT _IOWR(MQFS_IOC_MAGIC, 12, struct mqfs_notify_wait)
/* Remove message `index` only if the queue is still at `generation`, so that a queue that
 * changed meanwhile never loses another message: ESTALE then (nothing removed), ENOENT
 * past the last message, EBADF on a descriptor not open for reading. A blocked sender is
 * admitted into the freed slot, as after a receive. */
#define MQFS_IOC_REMOVE  _IOWR(MQFS_IOC_MAGIC, 13, struct mqfs_remove)

struct mqfs_map {            /* MAP: where a fast-path queue's shared mapping is */
	uint64_t maxmsg;         /* out: the geometry to attach it with (fastq_attach) */
	uint64_t msgsize;
	uint32_t version;        /* out: the mapping layout's version (FASTQ_VERSION) */
	uint32_t flags;          /* out: 0 */
	char path[1008];         /* out: the mapping file, absolute, NUL-terminated */
};
/* Mount with -o fastpath only (else EOPNOTSUPP), and only for the queue's owner or root
 * (else EACCES: use the ioctls and framed I/O, which the daemon checks). */
#define MQFS_IOC_MAP     _IOR(MQFS_IOC_MAGIC, 14, struct mqfs_map)

/* Framed I/O: many whole messages per pread()/pwrite() of the queue file (up to the
 * mount's plain_io_max, about 1 MiB), selected by the file offset; below MQFS_FRAMED
 * read() and write() keep their meaning. Semantics: see mqfs/wire.py and the README.
 *   pwrite(fd, frames, n, MQFS_FRAMED_SEND)             batch send: returns the bytes of
 *                                                       the whole frames sent
 *   pread(fd, buf, n, MQFS_FRAMED_RECEIVE)              batch receive
 *   pread(fd, buf, n, MQFS_FRAMED_RECEIVE_OFFSET(count)) ... of at most count messages
 *   pread(fd, buf, n, MQFS_FRAMED_PEEK_OFFSET(index))   batch peek from index
 * A send is frames back to back (struct mqfs_frame, then the payload zero-padded to a
 * multiple of 8: MQFS_FRAME_SIZE), so a short write consumed whole frames. A receive or
 * peek reply is a struct mqfs_frames, then `count` struct mqfs_frame records, then the
 * `count` payloads back to back, unpadded (payload i starts after those before it). */
/* The mount root's xattr of limits (JSON); a daemon that reads frames says "framed_io": 1
 * in it (an older one would take a framed write for one message). */
#define MQFS_LIMITS_XATTR "user.mq.limits"
#define MQFS_FRAMED ((int64_t)1 << 62)
#define MQFS_FRAMED_SEND MQFS_FRAMED
#define MQFS_FRAMED_RECEIVE MQFS_FRAMED
#define MQFS_FRAMED_PEEK (MQFS_FRAMED + ((int64_t)1 << 60))
#define MQFS_FRAMED_STRIDE ((int64_t)1 << 32)
#define MQFS_FRAMED_RECEIVE_OFFSET(count) \
	(MQFS_FRAMED_RECEIVE + (int64_t)(count) * MQFS_FRAMED_STRIDE)
#define MQFS_FRAMED_PEEK_OFFSET(index) (MQFS_FRAMED_PEEK + (int64_t)(index) * MQFS_FRAMED_STRIDE)
#define MQFS_FRAMES_MORE 1u  /* mqfs_frames.flags: the queue holds more after these */

struct mqfs_frame {          /* in a send, followed by its payload, zero-padded to 8 */
	uint32_t msg_len;
	uint32_t msg_prio;
};
#define MQFS_FRAME_SIZE(len) (sizeof(struct mqfs_frame) + (((size_t)(len) + 7) & ~(size_t)7))

struct mqfs_frames {         /* the head of a receive or peek reply */
	uint64_t generation;     /* the queue's generation: equal means unchanged */
	uint32_t count;          /* records (and payloads) that follow */
	uint32_t flags;          /* MQFS_FRAMES_MORE */
};

#endif /* MQFS_H */
