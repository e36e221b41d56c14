/* framed.c - the short way of mq_send and mq_receive: one pwrite() or pread() of the queue
 * file at a framed offset (include/mqfs.h, "Framed I/O"), a plain write- and read-sized
 * FUSE request where the SEND and RECEIVE ioctls copy a larger struct each way.
 *
 * Taken only for calls without a deadline, on a descriptor whose file is on the mount's
 * device, when the mount's daemon reads frames, and for messages that fit FRAMED_MAX. The device comes from statx() with no
 * fields asked and AT_STATX_DONT_SYNC, which the kernel answers without asking the daemon;
 * a pwrite() at the framed offset of any other file could extend it, which is why nothing
 * else is tried. Anything unexpected (a reply that is not one frame of at most the
 * buffer's size, an errno the kernel's mq_* never give) goes the ioctl way in sendrecv.c,
 * which also knows what to hand to glibc. A program's own read()/write() of the queue
 * file are at other offsets and keep their meaning.
 */
#include "shim.h"

#include <sys/sysmacros.h>
#include <sys/xattr.h>

/* The most bytes of one framed request: far below the mount's plain_io_max (about 1 MiB),
 * so the kernel never cuts it in two. Larger messages take the ioctls. */
#define FRAMED_MAX 65536
/* Requests up to this size are built on the stack. */
#define FRAMED_ON_STACK 4096

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

/* An 8-aligned buffer of size bytes: on_stack if it fits, else from malloc (NULL: none). */
static void *framed_buffer(uint64_t *on_stack, size_t size)
{
	return size <= FRAMED_ON_STACK ? on_stack : malloc(size);
}

static void release(void *buffer, uint64_t *on_stack)
{
	if (buffer != on_stack) {
		int saved = errno;
		free(buffer);
		errno = saved;
	}
}

int framed_send(mqd_t mqd, const char *msg, size_t len, unsigned prio, int *result)
{
	size_t size = MQFS_FRAME_SIZE(len);
	if (len > FRAMED_MAX || size > FRAMED_MAX || !framed_ok(mqd))
		return 0;
	uint64_t on_stack[FRAMED_ON_STACK / sizeof(uint64_t)];
	char *frame = framed_buffer(on_stack, size);
	if (frame == NULL)
		return 0;
	struct mqfs_frame head = {.msg_len = (uint32_t)len, .msg_prio = prio};
	memcpy(frame, &head, sizeof head);
	if (size > sizeof head) /* the padding after a payload is zeros */
		memset(frame + size - 8, 0, 8);
	if (copy_in(frame + sizeof head, msg, len) < 0) { /* EFAULT in the kernel's order */
		release(frame, on_stack);
		return 0;
	}
	ssize_t sent;
	do
		sent = pwrite(mqd, frame, size, MQFS_FRAMED_SEND);
	while (sent < 0 && errno == EINTR && restart_is_safe());
	release(frame, on_stack);
	if (sent == (ssize_t)size) {
		*result = 0;
		return 1;
	}
	if (sent == 0 || (sent < 0 && not_framed(errno)))
		return 0; /* nothing was sent */
	*result = sent < 0 ? -1 : fail(EIO); /* part of one frame: not mqfs's protocol */
	return 1;
}

int framed_receive(mqd_t mqd, char *buffer, size_t buflen, unsigned *prio, ssize_t *result)
{
	const size_t head = sizeof(struct mqfs_frames) + sizeof(struct mqfs_frame);
	if (buflen > FRAMED_MAX - head || !framed_ok(mqd))
		return 0;
	/* The daemon's EMSGSIZE for room < head + msgsize is mq_receive's for buflen < msgsize. */
	size_t size = head + buflen;
	uint64_t on_stack[FRAMED_ON_STACK / sizeof(uint64_t)];
	char *reply = framed_buffer(on_stack, size);
	if (reply == NULL)
		return 0;
	ssize_t got;
	do
		got = pread(mqd, reply, size, MQFS_FRAMED_RECEIVE_OFFSET(1));
	while (got < 0 && errno == EINTR && restart_is_safe());
	if (got == 0 || (got < 0 && not_framed(errno))) {
		release(reply, on_stack);
		return 0; /* nothing was received */
	}
	if (got < 0) {
		release(reply, on_stack);
		*result = -1;
		return 1;
	}
	/* From here a message may be ours: every length is checked before it is used. */
	struct mqfs_frames frames;
	struct mqfs_frame frame;
	if ((size_t)got < head) {
		release(reply, on_stack);
		*result = fail(EIO);
		return 1;
	}
	memcpy(&frames, reply, sizeof frames);
	memcpy(&frame, reply + sizeof frames, sizeof frame);
	if (frames.count != 1 || frame.msg_len > buflen || (size_t)got != head + frame.msg_len) {
		release(reply, on_stack);
		*result = fail(EIO); /* not mqfs's protocol: the message is lost, nothing overrun */
		return 1;
	}
	/* As the kernel: the priority first, then the message; EFAULT loses the message. */
	int fault = (prio != NULL && copy_out(prio, &frame.msg_prio, sizeof frame.msg_prio) < 0) ||
		    copy_out(buffer, reply + head, frame.msg_len) < 0;
	release(reply, on_stack);
	*result = fault ? fail(EFAULT) : (ssize_t)frame.msg_len;
	return 1;
}
