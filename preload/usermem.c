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

#include <setjmp.h>
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

/* -- the fault guard: plain copies that turn a fault into EFAULT ------------------------------ */

/* The fast path (fastpath.c) copies a message in or out per call, and process_vm_readv/
 * writev cost several microseconds each (they pin the pages): more than the whole send and
 * receive on the mapping. So once a process maps a queue, the shim handles SIGSEGV and
 * SIGBUS: a fault inside guarded_copy() (a thread-local jump buffer is set) jumps back out
 * of the copy with EFAULT; any other one goes to the handler that was there before (its
 * SA_SIGINFO or plain function), or, for the default action, the handler is reset to it
 * and the fault happens again (a sent signal is raised again). The handler has SA_ONSTACK
 * (a program's sigaltstack keeps working for stack overflows) and SA_RESTART (so that
 * restart_is_safe() is not changed by it). A program that installs its own SIGSEGV
 * handler later replaces this one: a bad pointer in a fast-path call is then its fault. */

enum { GUARD_NONE, GUARD_INSTALLING, GUARD_READY, GUARD_REFUSED };
static int guard_state;
static struct sigaction previous_segv, previous_bus;
static __thread sigjmp_buf *copy_env;

static void fault_handler(int signo, siginfo_t *info, void *context)
{
	sigjmp_buf *env = copy_env;
	if (env != NULL && info->si_code > 0) /* a fault, not a kill() (si_code <= 0) */
		siglongjmp(*env, 1);
	struct sigaction *previous = signo == SIGBUS ? &previous_bus : &previous_segv;
	if (previous->sa_flags & SA_SIGINFO) {
		previous->sa_sigaction(signo, info, context);
	} else if (previous->sa_handler == SIG_IGN && info->si_code <= 0) {
		/* ignored, as it was */
	} else if (previous->sa_handler == SIG_DFL || previous->sa_handler == SIG_IGN) {
		struct sigaction fallback = {.sa_handler = SIG_DFL};
		sigaction(signo, &fallback, NULL); /* a fault cannot be ignored: the default */
		if (info->si_code <= 0)
			raise(signo); /* pending until this handler returns */
	} else {
		previous->sa_handler(signo);
	}
}

void fault_guard_install(void)
{
	int expected = GUARD_NONE;
	if (!__atomic_compare_exchange_n(&guard_state, &expected, GUARD_INSTALLING, 0,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return;
	int saved = errno;
	struct sigaction action = {.sa_sigaction = fault_handler,
				   .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART};
	sigemptyset(&action.sa_mask);
	int ok = sigaction(SIGSEGV, &action, &previous_segv) == 0 &&
		 sigaction(SIGBUS, &action, &previous_bus) == 0;
	errno = saved;
	__atomic_store_n(&guard_state, ok ? GUARD_READY : GUARD_REFUSED, __ATOMIC_RELEASE);
}

/* memcpy under the guard: 0, or -1 with EFAULT (part may have been copied). */
static int guarded_memcpy(void *to, const void *from, size_t len)
{
	sigjmp_buf here;
	if (sigsetjmp(here, 0)) { /* no mask saved (a system call): unblock by hand */
		copy_env = NULL;
		sigset_t faults;
		sigemptyset(&faults);
		sigaddset(&faults, SIGSEGV);
		sigaddset(&faults, SIGBUS);
		pthread_sigmask(SIG_UNBLOCK, &faults, NULL);
		return fail(EFAULT);
	}
	copy_env = &here;
	__asm__ volatile("" ::: "memory"); /* the guard is up before the copy, lowered after */
	memcpy(to, from, len);
	__asm__ volatile("" ::: "memory");
	copy_env = NULL;
	return 0;
}

static int guard_ready(void)
{
	return __atomic_load_n(&guard_state, __ATOMIC_ACQUIRE) == GUARD_READY;
}

int guarded_copy_in(void *to, const void *user, size_t len)
{
	if (len == 0)
		return 0;
	return guard_ready() ? guarded_memcpy(to, user, len) : copy_in(to, user, len);
}

int copy_out_message(unsigned *user_prio, unsigned prio, void *user, const void *from,
		     size_t len)
{
	if (!guard_ready()) {
		if (user_prio != NULL && copy_out(user_prio, &prio, sizeof prio) < 0)
			return -1;
		return copy_out(user, from, len);
	}
	if (user_prio != NULL && guarded_memcpy(user_prio, &prio, sizeof prio) < 0)
		return -1;
	return len == 0 ? 0 : guarded_memcpy(user, from, len);
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
