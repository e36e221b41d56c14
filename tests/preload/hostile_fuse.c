/* hostile_fuse.c - a FUSE filesystem that answers mqfs's ioctls with lies, for the shim's tests.
 *
 *   hostile_fuse MOUNTPOINT
 *
 * MQFS_MOUNT may name any FUSE filesystem, so the LD_PRELOAD shim must not believe the lengths
 * in a reply. Every directory MNT/<scenario>/ holds a "queue" file whose RECEIVE or PEEK
 * replies break the protocol in one way (the *-honest ones keep it, to show the server works).
 * A message is 40000 bytes (longer than one chunk) of pattern_byte(offset). Single-threaded;
 * SIGTERM unmounts and exits, and so does the death of the parent (the test).
 */
#define FUSE_USE_VERSION 35
#define _GNU_SOURCE

#include <errno.h>
#include <fuse_lowlevel.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include "mqfs.h"

#define LENGTH 40000
#define HUGE 0xffffffffu

enum kind {
	RECV_HONEST,
	RECV_CHUNK_HUGE,       /* first reply: chunk_len 4 GiB */
	RECV_CHUNK_OVER_ASKED, /* first reply: one byte more than the request's room */
	RECV_CHUNK_OVER_LEN,   /* first reply: 20 bytes of a 10-byte message */
	RECV_LEN_OVER_BUFFER,  /* msg_len larger than the caller's buffer */
	RECV_NEXT_HUGE,        /* a later chunk: chunk_len 4 GiB */
	RECV_NEXT_OVER_ASKED,  /* a later chunk: one byte more than asked */
	RECV_NEXT_OTHER_LEN,   /* a later chunk: another msg_len */
	RECV_NO_XFER,          /* first chunk of a longer message, but no xfer_id for the rest */
	PEEK_HONEST,
	PEEK_COPIED_HUGE,       /* copied 4 GiB of a 1 MiB message */
	PEEK_COPIED_OVER_ASKED, /* one byte more than the request's room */
	PEEK_COPIED_OVER_LEN,   /* 20 bytes of a 10-byte message */
	PEEK_NEXT_HUGE,         /* a read by offset: copied 4 GiB */
	PEEK_NEXT_PAST_END,     /* a read by offset: more than is left of the message */
	PEEK_NEXT_EMPTY,        /* a read by offset: nothing, though the message is unchanged */
	KINDS
};

static const char *const names[KINDS] = {
	"recv-honest", "recv-chunk-huge", "recv-chunk-over-asked", "recv-chunk-over-len",
	"recv-len-over-buffer", "recv-next-huge", "recv-next-over-asked", "recv-next-other-len",
	"recv-no-xfer", "peek-honest", "peek-copied-huge", "peek-copied-over-asked",
	"peek-copied-over-len", "peek-next-huge", "peek-next-past-end", "peek-next-empty",
};

/* inode 1 is the root; scenario k is directory 2 + 2k and its queue file 3 + 2k. */
#define DIR_INO(k) ((fuse_ino_t)(2 + 2 * (k)))
#define QUEUE_INO(k) ((fuse_ino_t)(3 + 2 * (k)))

static unsigned char pattern_byte(uint64_t offset)
{
	return (unsigned char)(offset * 7 + 3);
}

static void fill(uint8_t *data, uint64_t offset, size_t count)
{
	for (size_t i = 0; i < count; i++)
		data[i] = pattern_byte(offset + i);
}

static void stat_of(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	if (ino == 1 || ino % 2 == 0) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0666;
		st->st_nlink = 1;
	}
}

static int known(fuse_ino_t ino)
{
	return ino >= 1 && ino <= QUEUE_INO(KINDS - 1);
}

static void do_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param entry;
	memset(&entry, 0, sizeof entry);
	entry.ino = 0;
	if (parent == 1) {
		for (int k = 0; k < KINDS; k++)
			if (strcmp(name, names[k]) == 0)
				entry.ino = DIR_INO(k);
	} else if (known(parent) && parent % 2 == 0 && strcmp(name, "queue") == 0) {
		entry.ino = parent + 1;
	}
	if (entry.ino == 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	stat_of(entry.ino, &entry.attr);
	fuse_reply_entry(req, &entry);
}

static void do_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	if (!known(ino)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	struct stat st;
	stat_of(ino, &st);
	fuse_reply_attr(req, &st, 0);
}

static void do_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (!known(ino) || ino == 1 || ino % 2 == 0) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	fi->direct_io = 1;
	fi->nonseekable = 1;
	fuse_reply_open(req, fi);
}

static void receive(fuse_req_t req, enum kind kind, const void *in_buf, size_t in_bufsz,
		    size_t out_bufsz)
{
	static struct mqfs_xfer x;
	if (in_bufsz < MQFS_XFER_HEADER_SIZE || out_bufsz < MQFS_XFER_HEADER_SIZE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	memcpy(&x, in_buf, MQFS_XFER_HEADER_SIZE);
	size_t room = out_bufsz - MQFS_XFER_HEADER_SIZE;
	if (room > MQFS_CHUNK)
		room = MQFS_CHUNK;
	uint64_t buflen = x.msg_len, offset = x.offset, continued = x.xfer_id != 0;
	uint64_t length = kind == RECV_CHUNK_OVER_LEN ? 10
			  : kind == RECV_LEN_OVER_BUFFER ? buflen + 1
							 : LENGTH;
	if (!continued)
		offset = 0;
	if (offset > length) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	size_t sent = length - offset < room ? (size_t)(length - offset) : room;
	memset(&x, 0, MQFS_XFER_HEADER_SIZE);
	x.msg_len = length;
	x.offset = offset;
	x.xfer_id = sent < length - offset ? 7 : 0;
	x.chunk_len = (uint32_t)sent;
	if (!continued) {
		if (kind == RECV_CHUNK_HUGE)
			x.chunk_len = HUGE;
		else if (kind == RECV_CHUNK_OVER_ASKED)
			x.chunk_len = (uint32_t)room + 1;
		else if (kind == RECV_CHUNK_OVER_LEN)
			x.chunk_len = sent = 20;
		else if (kind == RECV_NO_XFER)
			x.xfer_id = 0;
	} else {
		x.xfer_id = 7;
		if (kind == RECV_NEXT_HUGE)
			x.chunk_len = HUGE;
		else if (kind == RECV_NEXT_OVER_ASKED)
			x.chunk_len = (uint32_t)room + 1;
		else if (kind == RECV_NEXT_OTHER_LEN)
			x.msg_len = length + 10000;
	}
	fill(x.data, offset, sent);
	fuse_reply_ioctl(req, (int)sent, &x, MQFS_XFER_HEADER_SIZE + sent);
}

static void peek(fuse_req_t req, enum kind kind, const void *in_buf, size_t in_bufsz,
		 size_t out_bufsz)
{
	static struct mqfs_peek p;
	if (in_bufsz < MQFS_PEEK_HEADER_SIZE || out_bufsz < MQFS_PEEK_HEADER_SIZE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	memcpy(&p, in_buf, MQFS_PEEK_HEADER_SIZE);
	size_t room = out_bufsz - MQFS_PEEK_HEADER_SIZE;
	if (room > MQFS_CHUNK)
		room = MQFS_CHUNK;
	uint64_t index = p.index, offset = p.offset;
	uint64_t length = kind == PEEK_COPIED_HUGE ? 1u << 20
			  : kind == PEEK_COPIED_OVER_LEN ? 10
							 : LENGTH;
	if (index != 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (offset > length) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	size_t sent = length - offset < room ? (size_t)(length - offset) : room;
	memset(&p, 0, MQFS_PEEK_HEADER_SIZE);
	p.index = index;
	p.offset = offset;
	p.msg_len = length;
	p.msg_prio = 5;
	p.copied = (uint32_t)sent;
	if (kind == PEEK_COPIED_HUGE)
		p.copied = HUGE;
	else if (kind == PEEK_COPIED_OVER_ASKED)
		p.copied = (uint32_t)room + 1;
	else if (kind == PEEK_COPIED_OVER_LEN)
		p.copied = (uint32_t)(sent = 20);
	else if (offset > 0 && kind == PEEK_NEXT_HUGE)
		p.copied = HUGE;
	else if (offset > 0 && kind == PEEK_NEXT_PAST_END)
		p.copied = (uint32_t)(length - offset + 1);
	else if (offset > 0 && kind == PEEK_NEXT_EMPTY)
		p.copied = (uint32_t)(sent = 0);
	fill(p.data, offset, sent);
	fuse_reply_ioctl(req, (int)sent, &p, MQFS_PEEK_HEADER_SIZE + sent);
}

static void do_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		     struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		     size_t in_bufsz, size_t out_bufsz)
{
	(void)arg;
	(void)fi;
	if (flags & FUSE_IOCTL_COMPAT) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (!known(ino) || ino == 1 || ino % 2 == 0) {
		fuse_reply_err(req, ENOTTY);
		return;
	}
	enum kind kind = (enum kind)((ino - 3) / 2);
	unsigned int sizeless = cmd & ~(_IOC_SIZEMASK << _IOC_SIZESHIFT);
	if (cmd == MQFS_IOC_GETATTR) {
		struct mqfs_attr attr;
		memset(&attr, 0, sizeof attr);
		attr.maxmsg = 10;
		attr.msgsize = 65536;
		attr.curmsgs = 1;
		fuse_reply_ioctl(req, 0, &attr, sizeof attr);
	} else if (cmd == MQFS_IOC_PEEK_BATCH) {
		struct mqfs_batch batch;
		memset(&batch, 0, offsetof(struct mqfs_batch, data));
		batch.generation = 1; /* never changes: a bracketed peek is always steady */
		fuse_reply_ioctl(req, 0, &batch, offsetof(struct mqfs_batch, data));
	} else if (sizeless == (MQFS_IOC_RECEIVE & ~(_IOC_SIZEMASK << _IOC_SIZESHIFT))) {
		receive(req, kind, in_buf, in_bufsz, out_bufsz);
	} else if (sizeless == (MQFS_IOC_PEEK & ~(_IOC_SIZEMASK << _IOC_SIZESHIFT))) {
		peek(req, kind, in_buf, in_bufsz, out_bufsz);
	} else {
		fuse_reply_err(req, ENOTTY);
	}
}

static const struct fuse_lowlevel_ops operations = {
	.lookup = do_lookup,
	.getattr = do_getattr,
	.open = do_open,
	.ioctl = do_ioctl,
};

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
		return 2;
	}
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	char *fuse_argv[] = {argv[0], "-o", "fsname=mqfs-hostile,subtype=hostile", NULL};
	struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
	struct fuse_session *session = fuse_session_new(&args, &operations, sizeof operations, NULL);
	if (session == NULL)
		return 1;
	int status = 1;
	if (fuse_set_signal_handlers(session) == 0) {
		if (fuse_session_mount(session, argv[1]) == 0) {
			status = fuse_session_loop(session) < 0;
			fuse_session_unmount(session);
		}
		fuse_remove_signal_handlers(session);
	}
	fuse_session_destroy(session);
	return status;
}
