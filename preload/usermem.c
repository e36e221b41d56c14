/* usermem.c - the program's memory, read and written as the kernel does it: a bad pointer
 * gives EFAULT instead of a crash. The kernel's mq_* calls copy every user buffer with
 * copy_from_user/copy_to_user and answer EFAULT for one that is not mapped (or not
 * writable); so do the proposals. The shim copies through process_vm_readv/writev on its
 * own process, which faults into an error, never into SIGSEGV.
 *
 * Where those calls are refused (a seccomp filter, a kernel without
 * CONFIG_CROSS_MEMORY_ATTACH: ENOSYS or EPERM) the copy is a plain memcpy, and a bad
 * pointer crashes as it did before.
 */
#include "shim.h"

#include <sys/uio.h>

/* 0, or -1: the first call was refused, use memcpy from now on. */
static int vm_copy_refused;

static int copy_user(void *local, void *remote, size_t len, int to_remote)
{
	if (len == 0)
		return 0; /* as copy_to_user: no byte is touched, any pointer is fine */
	if (!__atomic_load_n(&vm_copy_refused, __ATOMIC_RELAXED)) {
		struct iovec here = {.iov_base = local, .iov_len = len};
		struct iovec there = {.iov_base = remote, .iov_len = len};
		int saved = errno;
		ssize_t done = to_remote ? process_vm_writev(getpid(), &here, 1, &there, 1, 0)
					 : process_vm_readv(getpid(), &here, 1, &there, 1, 0);
		if (done == (ssize_t)len) {
			errno = saved;
			return 0;
		}
		if (done >= 0 || errno == EFAULT) /* a partial copy stopped at a bad page */
			return fail(EFAULT);
		if (errno != ENOSYS && errno != EPERM)
			return -1; /* ENOMEM */
		__atomic_store_n(&vm_copy_refused, 1, __ATOMIC_RELAXED);
		errno = saved;
	}
	if (to_remote)
		memcpy(remote, local, len);
	else
		memcpy(local, remote, len);
	return 0;
}

int copy_in(void *to, const void *user, size_t len)
{
	return copy_user(to, (void *)user, len, 0);
}

int copy_out(void *user, const void *from, size_t len)
{
	return copy_user((void *)from, user, len, 1);
}

int copy_out_message(unsigned *user_prio, unsigned prio, void *user, const void *from,
		     size_t len)
{
	if (__atomic_load_n(&vm_copy_refused, __ATOMIC_RELAXED) ||
	    (user_prio == NULL && len == 0)) {
		if (user_prio != NULL && copy_out(user_prio, &prio, sizeof prio) < 0)
			return -1;
		return copy_out(user, from, len);
	}
	/* One system call: the kernel copies the iovecs in order and stops at a bad page. */
	struct iovec here[2], there[2];
	int count = 0;
	size_t total = 0;
	if (user_prio != NULL) {
		here[count] = (struct iovec){.iov_base = &prio, .iov_len = sizeof prio};
		there[count++] = (struct iovec){.iov_base = user_prio, .iov_len = sizeof prio};
		total += sizeof prio;
	}
	if (len > 0) {
		here[count] = (struct iovec){.iov_base = (void *)from, .iov_len = len};
		there[count++] = (struct iovec){.iov_base = user, .iov_len = len};
		total += len;
	}
	int saved = errno;
	ssize_t done = process_vm_writev(getpid(), here, (unsigned long)count, there,
					 (unsigned long)count, 0);
	if (done == (ssize_t)total) {
		errno = saved;
		return 0;
	}
	if (done >= 0 || errno == EFAULT)
		return fail(EFAULT);
	if (errno != ENOSYS && errno != EPERM)
		return -1;
	__atomic_store_n(&vm_copy_refused, 1, __ATOMIC_RELAXED);
	errno = saved;
	return copy_out_message(user_prio, prio, user, from, len);
}

int read_timeout(const struct timespec *user, struct timespec *copy)
{
	if (copy_in(copy, user, sizeof *copy) < 0)
		return -1;
	/* timespec64_valid: no negative seconds, nanoseconds in [0, 1e9) */
	if (copy->tv_sec < 0 || copy->tv_nsec < 0 || copy->tv_nsec >= 1000000000L)
		return fail(EINVAL);
	return 0;
}

int check_readable(const void *user, size_t len)
{
	if (len == 0 || __atomic_load_n(&vm_copy_refused, __ATOMIC_RELAXED))
		return 0;
	uintptr_t at = (uintptr_t)user, end = at + len;
	if (end < at)
		return fail(EFAULT);
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	char sink[64];
	struct iovec here[64], there[64];
	while (at < end) {
		int count = 0;
		for (; count < 64 && at < end; count++) { /* one byte of each page */
			here[count] = (struct iovec){.iov_base = &sink[count], .iov_len = 1};
			there[count] = (struct iovec){.iov_base = (void *)at, .iov_len = 1};
			at = (at / page + 1) * page;
		}
		int saved = errno;
		ssize_t done = process_vm_readv(getpid(), here, (unsigned long)count, there,
						(unsigned long)count, 0);
		if (done < 0 && (errno == ENOSYS || errno == EPERM)) {
			errno = saved;
			return 0; /* copy_in will find out: it falls back to memcpy too */
		}
		if (done != count)
			return fail(EFAULT);
		errno = saved;
	}
	return 0;
}
