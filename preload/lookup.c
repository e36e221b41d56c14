/* lookup.c - where the shim finds things: glibc's own mq_* functions, fcntl and syscall
 * (dlsym RTLD_NEXT, once, by a constructor), the mount (MQFS_MOUNT) and the other
 * environment settings; and queue names, which mq_open, __mq_open_2 and mq_unlink turn into
 * paths under the mount (MNT/name/queue) after the checks glibc and the kernel make.
 *
 * Every other file asks active() before doing anything: it is 0 without MQFS_MOUNT, and
 * the call then goes to glibc through `real`. See shim.h for the shim as a whole.
 */
#include "shim.h"

/* Defined below; glibc's <mqueue.h> declares it only for _FORTIFY_SOURCE. */
mqd_t __mq_open_2(const char *name, int oflag);

/* -- the real functions and the mount, looked up once ------------------------------------ */

struct real_functions real;

long timedreceive2_nr = __NR_mq_timedreceive2; /* MQFS_MQ_TIMEDRECEIVE2_NR */

char mount_path[PATH_MAX - NAME_MAX_MQ - 16]; /* "" = pass everything to glibc */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
int ready; /* see shim.h */

static void *lookup(const char *symbol)
{
	void *found = dlsym(RTLD_NEXT, symbol);
	if (found == NULL) { /* glibc always has these; say so rather than crash later */
		fprintf(stderr, "mqfs-preload: %s not found: %s\n", symbol, dlerror());
		abort();
	}
	return found;
}

static void init(void)
{
	real.mq_open = (__typeof__(real.mq_open))lookup("mq_open");
	real.mq_open_2 = (__typeof__(real.mq_open_2))lookup("__mq_open_2");
	real.mq_close = (__typeof__(real.mq_close))lookup("mq_close");
	real.mq_unlink = (__typeof__(real.mq_unlink))lookup("mq_unlink");
	real.mq_timedsend = (__typeof__(real.mq_timedsend))lookup("mq_timedsend");
	real.mq_timedreceive = (__typeof__(real.mq_timedreceive))lookup("mq_timedreceive");
	real.mq_getattr = (__typeof__(real.mq_getattr))lookup("mq_getattr");
	real.mq_setattr = (__typeof__(real.mq_setattr))lookup("mq_setattr");
	real.mq_notify = (__typeof__(real.mq_notify))lookup("mq_notify");
	real.fcntl = (__typeof__(real.fcntl))lookup("fcntl");
	real.fcntl64 = (__typeof__(real.fcntl64))lookup("fcntl64");
	real.syscall = (__typeof__(real.syscall))lookup("syscall");
	real.close = (__typeof__(real.close))lookup("close");
	real.dup2 = (__typeof__(real.dup2))lookup("dup2");
	real.dup3 = (__typeof__(real.dup3))lookup("dup3");
	real.close_range = (__typeof__(real.close_range))dlsym(RTLD_NEXT, "close_range");
	real.closefrom = (__typeof__(real.closefrom))dlsym(RTLD_NEXT, "closefrom");
	const char *number = getenv("MQFS_MQ_TIMEDRECEIVE2_NR");
	if (number != NULL && number[0] != '\0') {
		char *end;
		long parsed = strtol(number, &end, 0);
		if (*end == '\0' && parsed >= 0)
			timedreceive2_nr = parsed;
		else
			fprintf(stderr, "mqfs-preload: MQFS_MQ_TIMEDRECEIVE2_NR=%s is not a syscall "
				"number; using %ld\n", number, timedreceive2_nr);
	}
	/* Read once: getenv is not safe against a concurrent setenv in another thread. */
	const char *mount = getenv("MQFS_MOUNT");
	if (mount != NULL && mount[0] != '\0' && strlen(mount) < sizeof mount_path) {
		strcpy(mount_path, mount);
		size_t len = strlen(mount_path);
		while (len > 1 && mount_path[len - 1] == '/')
			mount_path[--len] = '\0';
	} else if (mount != NULL && mount[0] != '\0') {
		fprintf(stderr, "mqfs-preload: MQFS_MOUNT is too long; using the kernel's queues\n");
	}
	/* Registered here, once and outside helpers_lock: pthread_atfork takes glibc's atfork
	 * lock, which a concurrent fork holds while its prepare handlers wait for helpers_lock. */
	if (mount_path[0] != '\0')
		pthread_atfork(before_fork, after_fork_parent, after_fork_child);
	__atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
}

/* Everything is looked up when the library is loaded, so the interposed fcntl and syscall
 * never need pthread_once (which a call made from inside init, e.g. by an allocator that
 * uses syscall(), would deadlock on). */
__attribute__((constructor)) static void init_at_load(void)
{
	pthread_once(&init_once, init);
}

int active(void)
{
	/* Only an mq_* call made before our constructor (from another library's) gets here
	 * unready; fcntl and syscall never come here unready. */
	if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE))
		pthread_once(&init_once, init);
	return mount_path[0] != '\0';
}

/* glibc's `symbol` for fcntl/fcntl64/syscall called before the constructor ran (or from
 * inside init itself): looked up on the spot, without pthread_once; the race is benign. */
void *early_lookup(void **cache, const char *symbol)
{
	void *found = __atomic_load_n(cache, __ATOMIC_RELAXED);
	if (found == NULL) {
		found = lookup(symbol);
		__atomic_store_n(cache, found, __ATOMIC_RELAXED);
	}
	return found;
}

/* -- names and mq_open ------------------------------------------------------------------- */

/* glibc's check (a leading slash) and then the kernel's, as mqfs/posix.py. */
static const char *bare_name(const char *name)
{
	if (name[0] != '/') {
		errno = EINVAL;
		return NULL;
	}
	const char *bare = name + 1;
	size_t len = strlen(bare);
	if (len > NAME_MAX_MQ)
		errno = ENAMETOOLONG;
	else if (len == 0)
		errno = ENOENT;
	else if (strchr(bare, '/') != NULL || strcmp(bare, ".") == 0 || strcmp(bare, "..") == 0)
		errno = EACCES;
	else
		return bare;
	return NULL;
}

static void queue_path(char *out, size_t size, const char *bare, const char *leaf)
{
	snprintf(out, size, "%s/%s%s%s", mount_path, bare, leaf[0] ? "/" : "", leaf);
}

/* The umask without changing it: umask(0)+umask(old) would race with other threads'
 * file creation. /proc/self/status has "Umask:" since Linux 4.7. */
static mode_t current_umask(void)
{
	int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		char buffer[4096];
		ssize_t got = read(fd, buffer, sizeof buffer - 1);
		close(fd);
		if (got > 0) {
			buffer[got] = '\0';
			char *line = strstr(buffer, "\nUmask:");
			if (line != NULL)
				return (mode_t)strtoul(line + 7, NULL, 8);
		}
	}
	mode_t mask = umask(0);
	umask(mask);
	return mask;
}

static int create_queue(const char *bare, int exclusive, mode_t mode, const struct mq_attr *attr)
{
	struct mqfs_create request;
	memset(&request, 0, sizeof request);
	strcpy(request.name, bare); /* bare_name checked: at most 255 bytes */
	request.mode = (uint32_t)(mode & 07777 & ~current_umask());
	request.flags = exclusive ? MQFS_CREATE_EXCL : 0;
	if (attr != NULL) {
		request.flags |= MQFS_CREATE_ATTR;
		request.maxmsg = attr->mq_maxmsg;
		request.msgsize = attr->mq_msgsize;
	}
	int root = open(mount_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return -1;
	int result = ioctl(root, MQFS_IOC_CREATE, &request);
	int saved = errno;
	close(root);
	errno = saved;
	return result < 0 ? -1 : 0;
}

/* mq_open is a CREATE ioctl then an open(2): a queue another thread or process unlinks in
 * between would be ENOENT, where the kernel's mq_open (one lookup under its lock) gives a
 * descriptor of the queue. So with O_CREAT an ENOENT from the open makes the queue again, a
 * bounded number of times: each retry means someone unlinked the name just then. An
 * unlinker in a tight loop can still win every attempt (its rmdir is already waiting in
 * the daemon when CREATE replies), and then mq_open is ENOENT as before. O_EXCL stays on
 * every attempt: EEXIST then means someone else made the name since, so a descriptor
 * returned for O_EXCL is always of a queue this call created. */
#define OPEN_ATTEMPTS 64

/* One create (with O_CREAT) and open; -1 with errno as the kernel's mq_open would set it. */
static mqd_t create_and_open(const char *bare, const char *path, int oflag, mode_t mode,
			     const struct mq_attr *attr)
{
	if ((oflag & O_ACCMODE) == O_ACCMODE) {
		/* The kernel's prepare_open: O_RDWR|O_WRONLY is EINVAL on an existing queue (after
		 * O_CREAT|O_EXCL's EEXIST), but a new queue is made and opened with access mode 3. */
		if (!(oflag & O_CREAT)) {
			struct stat st;
			if (stat(path, &st) < 0)
				return -1; /* ENOENT first */
			return fail(EINVAL);
		}
		if (create_queue(bare, 1, mode, attr) < 0) {
			if (errno == EEXIST && !(oflag & O_EXCL))
				errno = EINVAL;
			return -1;
		}
	} else if (oflag & O_CREAT) {
		if (create_queue(bare, oflag & O_EXCL, mode, attr) < 0)
			return -1;
	}
	/* Only what mq_open means reaches open(2): O_CREAT/O_EXCL were the CREATE ioctl's, and
	 * O_TRUNC, O_DIRECTORY, O_PATH... mean nothing to the kernel's mq_open. Its mqd_t is
	 * always close-on-exec. */
	return open(path, (oflag & (O_ACCMODE | O_NONBLOCK)) | O_CLOEXEC);
}

static mqd_t shim_open(const char *name, int oflag, mode_t mode, const struct mq_attr *attr)
{
	struct mq_attr copy; /* the kernel copies attr first (EFAULT); glibc checks the slash */
	if (attr != NULL && name[0] == '/') {
		if (copy_in(&copy, attr, sizeof copy) < 0)
			return -1;
		attr = &copy;
	}
	const char *bare = bare_name(name);
	if (bare == NULL)
		return -1;
	char path[PATH_MAX];
	queue_path(path, sizeof path, bare, "queue");
	for (int attempt = 1;; attempt++) {
		mqd_t mqd = create_and_open(bare, path, oflag, mode, attr);
		if (mqd >= 0)
			fast_open(mqd);
		if (mqd >= 0 || errno != ENOENT || !(oflag & O_CREAT) || attempt == OPEN_ATTEMPTS)
			return mqd;
	}
}

EXPORT mqd_t mq_open(const char *name, int oflag, ...)
{
	mode_t mode = 0;
	struct mq_attr *attr = NULL;
	if (oflag & O_CREAT) {
		va_list ap;
		va_start(ap, oflag);
		mode = va_arg(ap, mode_t);
		attr = va_arg(ap, struct mq_attr *);
		va_end(ap);
	}
	if (!active())
		return real.mq_open(name, oflag, mode, attr);
	return shim_open(name, oflag, mode, attr);
}

/* The _FORTIFY_SOURCE entry for mq_open(name, oflag) with two arguments. */
EXPORT mqd_t __mq_open_2(const char *name, int oflag)
{
	if (!active() || (oflag & O_CREAT)) /* glibc's own fortify failure for O_CREAT */
		return real.mq_open_2(name, oflag);
	return shim_open(name, oflag, 0, NULL);
}

EXPORT int mq_unlink(const char *name)
{
	if (!active())
		return real.mq_unlink(name);
	const char *bare = bare_name(name);
	if (bare == NULL)
		return -1;
	char path[PATH_MAX];
	queue_path(path, sizeof path, bare, "");
	int result = rmdir(path);
	if (result < 0 && errno == EPERM) /* as glibc's mq_unlink */
		errno = EACCES;
	return result;
}
