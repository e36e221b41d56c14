/* floor.c - the physical floor of a FUSE round trip: a minimal libfuse3 low-level daemon.
 *
 * It mounts one file, MNT/file, that answers what the benchmark's FUSE-floor rows ask of
 * mqfs: the NOOP ioctl (MQFS_IOC_NOOP, _IO('Q', 0): nothing in, nothing out) and a 64-byte
 * read, opened direct_io as mqfs opens its files, so that every read is a round trip into
 * the daemon. Nothing else is done per request: no allocation, no logging, one thread
 * (fuse_session_loop), as mqfs's daemon serves one request at a time. What mqfs costs above
 * these two is the price of the daemon being Python (pyfuse3 and trio), not of FUSE.
 *
 * Usage: floor MOUNTPOINT. It prints "ready" on stdout once mounted, and unmounts on
 * SIGTERM, SIGINT or SIGHUP; it gets SIGTERM when its parent dies (PR_SET_PDEATHSIG).
 * Built and run by benchmarks/native.py, never installed.
 */
#define FUSE_USE_VERSION 35
#include <errno.h>
#include <fuse_lowlevel.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#define FILE_NAME "file"
#define FILE_INO 2
#define FILE_SIZE 64
#define IOC_NOOP _IO('Q', 0) /* MQFS_IOC_NOOP in include/mqfs.h */
#define TIMEOUT 3600.0       /* nothing here ever changes */

static const char contents[FILE_SIZE] = "the C floor of a FUSE round trip: 64 bytes, direct_io read\n";

static int stat_of(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else if (ino == FILE_INO) {
		st->st_mode = S_IFREG | 0666;
		st->st_nlink = 1;
		st->st_size = FILE_SIZE;
	} else {
		return -1;
	}
	return 0;
}

static void floor_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param entry;
	memset(&entry, 0, sizeof entry);
	if (parent != FUSE_ROOT_ID || strcmp(name, FILE_NAME) != 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	entry.ino = FILE_INO;
	entry.attr_timeout = TIMEOUT;
	entry.entry_timeout = TIMEOUT;
	stat_of(FILE_INO, &entry.attr);
	fuse_reply_entry(req, &entry);
}

static void floor_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct stat st;
	if (stat_of(ino, &st) != 0)
		fuse_reply_err(req, ENOENT);
	else
		fuse_reply_attr(req, &st, TIMEOUT);
}

static void floor_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != FILE_INO) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	fi->direct_io = 1; /* every read reaches the daemon, as on mqfs */
	fi->keep_cache = 0;
	fuse_reply_open(req, fi);
}

static void floor_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	if (off >= FILE_SIZE) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	size_t left = FILE_SIZE - (size_t)off;
	fuse_reply_buf(req, contents + off, size < left ? size : left);
}

static void floor_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
			struct fuse_file_info *fi, unsigned flags, const void *in_buf,
			size_t in_bufsz, size_t out_bufsz)
{
	(void)ino;
	(void)arg;
	(void)fi;
	(void)in_buf;
	(void)in_bufsz;
	(void)out_bufsz;
	if (cmd == IOC_NOOP && !(flags & FUSE_IOCTL_COMPAT))
		fuse_reply_ioctl(req, 0, NULL, 0);
	else
		fuse_reply_err(req, ENOTTY);
}

static const struct fuse_lowlevel_ops operations = {
	.lookup = floor_lookup,
	.getattr = floor_getattr,
	.open = floor_open,
	.read = floor_read,
	.ioctl = floor_ioctl,
};

int main(int argc, char *argv[])
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
		return 2;
	}
	prctl(PR_SET_PDEATHSIG, SIGTERM); /* dies (and unmounts) with the benchmark */
	char *args_argv[] = {argv[0], NULL};
	struct fuse_args args = FUSE_ARGS_INIT(1, args_argv);
	struct fuse_session *session = fuse_session_new(&args, &operations, sizeof operations, NULL);
	if (session == NULL)
		return 1;
	int status = 1;
	if (fuse_set_signal_handlers(session) == 0) {
		if (fuse_session_mount(session, argv[1]) == 0) {
			printf("ready\n");
			fflush(stdout);
			status = fuse_session_loop(session) == 0 ? 0 : 1;
			fuse_session_unmount(session);
		}
		fuse_remove_signal_handlers(session);
	}
	fuse_session_destroy(session);
	return status;
}
