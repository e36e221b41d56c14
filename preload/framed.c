/* framed.c - the short way of mq_send and mq_receive: one pwritev() or preadv() of the
 * queue file at a framed offset (include/mqfs.h, "Framed I/O"), a plain write- and
 * read-sized FUSE request where the SEND and RECEIVE ioctls copy a larger struct each way.
 * The kernel itself reads the message from, and writes the reply into, the program's
 * memory (the frame's header and the reply's are separate iovecs), so no copy is made
 * and a bad pointer is the kernel's EFAULT.
 *
 * Taken only for calls without a deadline, for messages that fit FRAMED_MAX, on a
 * descriptor whose file is on the mount's device, when the mount's daemon reads frames.
 * The device comes from statx() with no fields asked and AT_STATX_DONT_SYNC, which the
 * kernel answers without asking the daemon; a pwrite() at the framed offset of any other
 * file could extend it, which is why nothing else is tried. Anything unexpected (EFAULT,
 * whose place in the order of checks the ioctl way knows; a reply that is not one frame
 * of at most the buffer's size; an errno the kernel's mq_* never give) goes the ioctl way
 * in sendrecv.c, which also knows what to hand to glibc. A program's own read()/write()
 * of the queue file are at other offsets and keep their meaning.
 */
#include "shim.h"

#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/xattr.h>

/* The most bytes of one framed request: far below the mount's plain_io_max (about 1 MiB),
 * so the kernel never cuts it in two. Larger messages take the ioctls. */
#define FRAMED_MAX 65536

/* The mount's device, makedev(major, minor), once known: in framed_device if its daemon
 * reads frames, else in plain_device (0: not known). A descriptor on another device makes
 * the shim look at the mount again (it may have been made again since). */
static uint64_t framed_device, plain_device;

static int device_of(int dirfd, const char *path, int flags, uint64_t *device)
{
	struct statx about;
	if (statx(dirfd, path, flags | AT_STATX_DONT_SYNC, 0, &about) < 0)
		return -1;
	*device = makedev(about.stx_dev_major, about.stx_dev_minor);
	return 0;
}

/* Whether the daemon behind the mount reads frames: its user.mq.limits says so. An older
 * daemon would take a framed write for one message, header and all. */
static int daemon_reads_frames(void)
{
	char limits[4096];
	ssize_t got = getxattr(mount_path, MQFS_LIMITS_XATTR, limits, sizeof limits - 1);
	if (got <= 0)
		return 0;
	limits[got] = '\0';
	return strstr(limits, "\"framed_io\": 1") != NULL;
}

/* 1 if descriptor fd is a file of the mount (it may still be any of its files) and the
 * mount's daemon reads frames. */
static int framed_ok(int fd)
{
	uint64_t device, mount;
	if (fd < 0 || device_of(fd, "", AT_EMPTY_PATH, &device) < 0)
		return 0;
	if (device == __atomic_load_n(&framed_device, __ATOMIC_RELAXED))
		return 1;
	if (device == __atomic_load_n(&plain_device, __ATOMIC_RELAXED))
		return 0;
	if (device_of(AT_FDCWD, mount_path, 0, &mount) < 0 || device != mount)
		return 0;
	int frames = daemon_reads_frames();
	__atomic_store_n(frames ? &framed_device : &plain_device, mount, __ATOMIC_RELAXED);
	return frames;
}

/* errno values after which the ioctl way decides: the kernel's mq_* never say them, and a
 * file of the mount that is not a queue file (a directory, a status file) does. */
static int not_framed(int code)
{
	return code == EISDIR || code == EINVAL || code == ESPIPE || code == ENOTTY || code == ENOSYS;
}

int framed_send(mqd_t mqd, const char *msg, size_t len, unsigned prio, int *result)
{
	size_t size = MQFS_FRAME_SIZE(len);
	if (len > FRAMED_MAX || size > FRAMED_MAX || !framed_ok(mqd))
		return 0;
	/* The frame's header, the program's message as it is and the zero padding: the
	 * kernel reads the message itself (EFAULT before anything reaches the daemon). */
	struct mqfs_frame head = {.msg_len = (uint32_t)len, .msg_prio = prio};
	static const char padding[8];
	struct iovec frame[3] = {
		{.iov_base = &head, .iov_len = sizeof head},
		{.iov_base = (void *)msg, .iov_len = len},
		{.iov_base = (void *)padding, .iov_len = size - sizeof head - len},
	};
	ssize_t sent;
	do
		sent = pwritev(mqd, frame, 3, MQFS_FRAMED_SEND);
	while (sent < 0 && errno == EINTR && restart_is_safe());
	if (sent == (ssize_t)size) {
		*result = 0;
		return 1;
	}
	/* Nothing was sent. EFAULT and EMSGSIZE go the ioctl way, which gives the kernel's
	 * answer in its order of checks: a bad pointer part-way can make the kernel send the
	 * daemon the frame's first pages only, which the daemon refuses whole. */
	if (sent == 0 || (sent < 0 && (not_framed(errno) || errno == EFAULT || errno == EMSGSIZE)))
		return 0;
	*result = sent < 0 ? -1 : fail(EIO); /* part of one frame: not mqfs's protocol */
	return 1;
}

int framed_receive(mqd_t mqd, char *buffer, size_t buflen, unsigned *prio, ssize_t *result)
{
	const size_t head = sizeof(struct mqfs_frames) + sizeof(struct mqfs_frame);
	if (buflen > FRAMED_MAX - head || !framed_ok(mqd))
		return 0;
	/* The reply lands where it belongs: its header here, the priority in *prio and the
	 * message in the program's buffer, written by the kernel (a bad pointer is EFAULT
	 * before the daemon sees the request). The daemon's EMSGSIZE for a read that cannot
	 * hold head + msgsize is mq_receive's for buflen < msgsize. */
	struct mqfs_frames frames;
	uint32_t length, priority;
	struct iovec reply[4] = {
		{.iov_base = &frames, .iov_len = sizeof frames},
		{.iov_base = &length, .iov_len = sizeof length},
		{.iov_base = prio != NULL ? (void *)prio : &priority, .iov_len = sizeof priority},
		{.iov_base = buffer, .iov_len = buflen},
	};
	ssize_t got;
	do
		got = preadv(mqd, reply, 4, MQFS_FRAMED_RECEIVE_OFFSET(1));
	while (got < 0 && errno == EINTR && restart_is_safe());
	/* Nothing was received. EFAULT, and EMSGSIZE too, go the ioctl way, which gives the
	 * kernel's answer: a bad pointer can make the kernel send the daemon a shorter read
	 * (the pages up to it), which the daemon answers with EMSGSIZE. */
	if (got == 0 || (got < 0 && (not_framed(errno) || errno == EFAULT || errno == EMSGSIZE)))
		return 0;
	if (got < 0) {
		*result = -1;
		return 1;
	}
	/* From here a message was ours: every length is checked before it is believed. */
	if ((size_t)got < head || frames.count != 1 || length > buflen ||
	    (size_t)got != head + length) {
		*result = fail(EIO); /* not mqfs's protocol: the message is lost, nothing overrun */
		return 1;
	}
	*result = (ssize_t)length;
	return 1;
}
