/* sendrecv.c - moving messages: mq_send, mq_timedsend, mq_receive, mq_timedreceive (the
 * SEND and RECEIVE ioctls, in chunks of at most MQFS_CHUNK bytes, every reply's lengths
 * checked before use), and mq_getattr / mq_setattr (GETATTR, SETATTR).
 *
 * Sends and receives are the calls that block in the daemon, so this file also decides
 * when one interrupted by a signal is restarted rather than failed with EINTR, as the
 * kernel does under SA_RESTART (shim.h, "EINTR"). peek.c's mq_timedreceive2 without
 * MQ_PEEK is shim_receive too.
 */
#include "shim.h"

/* -- EINTR and SA_RESTART ------------------------------------------------------------------ */

/* Whether the kernel would surely have restarted the interrupted call: every caught signal
 * has SA_RESTART. Uncaught ones that do not kill (SIGSTOP/SIGCONT...) restart in the kernel. */
int restart_is_safe(void)
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
		int result = ioctl(fd, cmd, arg);
		if (result >= 0 || errno != EINTR || !restart_is_safe())
			return result;
	}
}

/* -- send and receive ---------------------------------------------------------------------- */

static void set_deadline(struct mqfs_xfer *x, const struct timespec *deadline)
{
	if (deadline != NULL) { /* a copy, checked by read_timeout */
		x->flags = MQFS_XFER_TIMED;
		x->tv_sec = deadline->tv_sec;
		x->tv_nsec = deadline->tv_nsec;
	}
}

/* The message of a send cannot be read. The kernel says EFAULT only after EBADF and
 * EMSGSIZE: those are found first (a descriptor not the daemon's goes to glibc). */
static int send_fault(mqd_t mqd, const char *msg, size_t len, unsigned prio,
		      const struct timespec *deadline)
{
	struct mqfs_attr attr;
	memset(&attr, 0, sizeof attr);
	int result = ioctl(mqd, MQFS_IOC_GETATTR, &attr);
	if (not_ours(result))
		return real.mq_timedsend(mqd, msg, len, prio, deadline);
	if (result < 0)
		return -1;
	int flags = real.fcntl(mqd, F_GETFL); /* FMODE_WRITE: O_WRONLY or O_RDWR */
	if (flags < 0 || ((flags & O_ACCMODE) != O_WRONLY && (flags & O_ACCMODE) != O_RDWR))
		return fail(EBADF);
	if (len > (uint64_t)attr.msgsize)
		return fail(EMSGSIZE);
	return fail(EFAULT);
}

/* Whole-message atomic send in chunks (mqfs/client/calls.py's send). The message enters the queue
 * when the last chunk arrives, and that call is the one that blocks; an interrupted last
 * chunk ends the transfer in the daemon, so a restart starts it again from the beginning.
 * The kernel's order: the timeout (EFAULT, EINVAL), the priority (EINVAL), EBADF, EMSGSIZE,
 * the message (EFAULT), then EAGAIN/ETIMEDOUT. The whole message is known readable before
 * its first chunk goes out (a page unmapped meanwhile by another thread leaves the daemon's
 * half-made transfer until close, and gives EFAULT). */
static int shim_send(mqd_t mqd, const char *msg, size_t len, unsigned prio,
		     const struct timespec *user_deadline)
{
	struct timespec copy, *deadline = NULL;
	if (user_deadline != NULL) {
		if (read_timeout(user_deadline, &copy) < 0)
			return -1;
		deadline = &copy;
	}
	if (prio >= MQ_PRIO_MAX)
		return fail(EINVAL);
	int fast;
	if (fast_send(mqd, msg, len, prio, deadline, &fast))
		return fast;
	int framed;
	if (deadline == NULL && framed_send(mqd, msg, len, prio, &framed))
		return framed;
	if (len > MQFS_CHUNK && check_readable(msg, len) < 0)
		return send_fault(mqd, msg, len, prio, user_deadline);
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
		if (copy_in(x->data, msg + offset, chunk) < 0) {
			free(x);
			if (offset == 0)
				return send_fault(mqd, msg, len, prio, user_deadline);
			return -1;
		}
		unsigned long cmd = MQFS_IOC_SIZED(MQFS_IOC_SEND, MQFS_XFER_HEADER_SIZE + chunk);
		result = ioctl(mqd, cmd, x);
		if (result < 0) {
			if (offset == 0 && not_ours(result)) {
				free(x);
				return real.mq_timedsend(mqd, msg, len, prio, user_deadline);
			}
			if (errno == EINTR && restart_is_safe())
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

ssize_t shim_receive(mqd_t mqd, char *buffer, size_t buflen, unsigned *prio,
		     const struct timespec *user_deadline)
{
	struct timespec copy, *deadline = NULL;
	if (user_deadline != NULL) {
		if (read_timeout(user_deadline, &copy) < 0)
			return -1;
		deadline = &copy;
	}
	ssize_t fast;
	if (fast_receive(mqd, buffer, buflen, prio, deadline, &fast))
		return fast;
	ssize_t framed;
	if (deadline == NULL && framed_receive(mqd, buffer, buflen, prio, &framed))
		return framed;
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
		if (saved == ENOTTY || saved == EBADF) /* see not_ours */
			return real.mq_timedreceive(mqd, buffer, buflen, prio, user_deadline);
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
	/* As the kernel: the priority is stored first, then the message; a bad pointer is EFAULT
	 * and the message is gone (the rest is still fetched, so the daemon holds nothing). */
	int fault = (prio != NULL && copy_out(prio, &priority, sizeof priority) < 0) ||
		    copy_out(buffer, x->data, received) < 0;
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
		fault = fault || copy_out(buffer + received, x->data, x->chunk_len) < 0;
		received += x->chunk_len;
	}
	free(x);
	if (fault)
		return fail(EFAULT);
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
	int fast;
	if (fast_getattr(mqd, attr, &fast))
		return fast;
	struct mqfs_attr got;
	memset(&got, 0, sizeof got);
	int result = ioctl(mqd, MQFS_IOC_GETATTR, &got);
	if (not_ours(result))
		return real.mq_getattr(mqd, attr);
	if (result < 0)
		return -1;
	struct mq_attr out;
	to_mq_attr(&got, &out);
	return copy_out(attr, &out, sizeof out); /* EFAULT after EBADF, as the kernel */
}

EXPORT int mq_setattr(mqd_t mqd, const struct mq_attr *attr, struct mq_attr *old)
{
	if (!active())
		return real.mq_setattr(mqd, attr, old);
	struct mqfs_attr request;
	memset(&request, 0, sizeof request);
	int result;
	long nonblock = 0;
	/* <mqueue.h> says attr is nonnull, but glibc passes NULL through to the kernel, where
	 * it means "only get": keep that, hiding the pointer from the nonnull assumption. */
	__asm__("" : "+r"(attr));
	if (attr == NULL) {
		result = ioctl(mqd, MQFS_IOC_GETATTR, &request);
	} else {
		struct mq_attr wanted; /* the kernel copies it first: EFAULT before anything */
		if (copy_in(&wanted, attr, sizeof wanted) < 0)
			return -1;
		request.flags = wanted.mq_flags;
		nonblock = wanted.mq_flags & O_NONBLOCK;
		result = ioctl(mqd, MQFS_IOC_SETATTR, &request);
	}
	if (not_ours(result))
		return real.mq_setattr(mqd, attr, old);
	if (result < 0)
		return -1;
	if (attr != NULL) {
		/* The open file description's O_NONBLOCK too: the fast path (fastpath.c) reads
		 * it with F_GETFL on every call, as the kernel reads f_flags. */
		int saved = errno, flags = real.fcntl(mqd, F_GETFL);
		int wanted = nonblock ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
		if (flags >= 0 && wanted != flags)
			real.fcntl(mqd, F_SETFL, wanted);
		errno = saved;
	}
	if (old == NULL)
		return 0;
	struct mq_attr out; /* EFAULT now leaves the new flags set, as the kernel's */
	to_mq_attr(&request, &out);
	return copy_out(old, &out, sizeof out);
}
