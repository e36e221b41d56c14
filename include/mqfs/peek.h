/* mqfs/peek.h - the two proposed kernel APIs for non-destructive POSIX message-queue reads,
 * as their patches define them, so code written for them compiles today and runs on mqfs
 * under the LD_PRELOAD shim (README, "Developing against the proposed peek APIs").
 *
 * 1. fcntl(mqd, F_MQ_PEEK, &attr) - "[RFC PATCH 1/3] mqueue: uapi: add struct mq_peek_attr
 *    and F_MQ_PEEK", Shaurya Rane, 25 March 2026:
 *      https://lore-kernel.gnuweeb.org/linux-fsdevel/20260325190025.40312-2-ssrane_b23@ee.vjti.ac.in
 *      https://lkml.rescloud.iu.edu/2603.3/04490.html (cover letter: .../2603.3/04497.html)
 *    The struct below is copied field for field from that series' include/uapi/linux/mqueue.h
 *    as mirrored in github.com/linux-fsdevel/vfs (commit 98806231d65223a7fbb8023301eb668a07a9fb8f);
 *    the semantics are its do_mq_peek() in ipc/mqueue.c (commit
 *    9201f1e38cf699749020f47fa5be5ce2e85b6512): EBADF for a file that is not a queue or not
 *    open for reading, EFAULT for a bad attr, EINVAL for offset < 0, buf_len == 0 or
 *    buf == NULL, ENOMSG when there is no message at offset (an empty queue included);
 *    otherwise the payload is copied TRUNCATED to buf_len, msg_prio is filled in and the
 *    return value is the number of bytes copied.
 *
 * 2. syscall(__NR_mq_timedreceive2, ...) - Mathura Kumar's mq_timedreceive2 series
 *    (https://lwn.net/ml/all/20260320052340.6696-1-academic1mathura@gmail.com, described in
 *    LWN "IPC medley: message-queue peeking, io_uring, and bus1", https://lwn.net/Articles/1065490/):
 *    flags & MQ_PEEK copies message `index` (0 = what a receive returns next) without removing
 *    it; without MQ_PEEK it is mq_timedreceive. Errors: EBADF (not a queue / not open for
 *    reading), EMSGSIZE (msg_len < the queue's mq_msgsize - never truncation), EAGAIN (MQ_PEEK
 *    on an empty queue; peek never blocks and ignores abs_timeout), ENOENT (no message at
 *    index), EFAULT, and in the second revision of its documentation EINVAL for unknown flags
 *    or a nonzero index without MQ_PEEK. The x86-64 number 548 and MQ_PEEK = 2U are the
 *    series' selftest's (mq_peek.c, "Selftest for mq_timedreceive2(MQ_PEEK)").
 *
 * Neither is merged: on today's kernel F_MQ_PEEK fails with EINVAL and syscall 548 with
 * ENOSYS. Do not include this header together with a kernel <linux/mqueue.h> that defines
 * struct mq_peek_attr itself.
 */
#ifndef MQFS_PEEK_H
#define MQFS_PEEK_H

#include <linux/types.h> /* __s32, __u32, __kernel_size_t: the patch's own types */
#include <mqueue.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* -- fcntl(F_MQ_PEEK) ---------------------------------------------------------------------- */

#ifndef F_LINUX_SPECIFIC_BASE
#define F_LINUX_SPECIFIC_BASE 1024
#endif
#ifndef F_MQ_PEEK
#define F_MQ_PEEK (F_LINUX_SPECIFIC_BASE + 17) /* 1041 */
#endif

/* Argument structure for fcntl(F_MQ_PEEK): 24 bytes on x86-64.
 * @offset:   index in receive order (0 = highest priority, next to dequeue); FIFO within a
 *            priority.
 * @msg_prio: out: priority of the message at @offset.
 * @buf_len:  size of the caller's buffer at @buf.
 * @buf:      out: the payload, truncated to @buf_len bytes if the message is longer. */
struct mq_peek_attr {
	__s32 offset;
	__u32 msg_prio;
	__kernel_size_t buf_len;
	char *buf;
};

/* -- mq_timedreceive2 ---------------------------------------------------------------------- */

#ifndef MQ_PEEK
#define MQ_PEEK 2U
#endif
#ifndef __NR_mq_timedreceive2
#define __NR_mq_timedreceive2 548 /* proposed, x86-64 (the shim: MQFS_MQ_TIMEDRECEIVE2_NR) */
#endif
#ifndef SYS_mq_timedreceive2
#define SYS_mq_timedreceive2 __NR_mq_timedreceive2
#endif

struct mq_timedreceive2_args {
	size_t msg_len;          /* size of msg_ptr; must be >= the queue's mq_msgsize */
	unsigned int *msg_prio;  /* out if not NULL: the message's priority */
	char *msg_ptr;           /* out: the message */
};

/* No libc wrapper exists: the series says to call it through syscall(2), as this does. */
static inline ssize_t mq_timedreceive2(mqd_t mqdes, struct mq_timedreceive2_args *uargs,
				       unsigned int flags, unsigned long index,
				       const struct timespec *abs_timeout)
{
	return (ssize_t)syscall(__NR_mq_timedreceive2, (long)mqdes, uargs, (long)flags, index,
				abs_timeout);
}

#endif /* MQFS_PEEK_H */
