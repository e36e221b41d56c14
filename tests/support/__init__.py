"""The one home of the tests' shared helpers (conftest.py files only wrap them in fixtures).

- paths: ROOT (the repository), INCLUDE (the C headers), SHIM_LIBRARY (the built shim).
- waiting: wait_until, a condition polled with a deadline (never a sleep "to settle").
- mounts: Mount, mounted() (a real mqfs daemon), mount_point() (a directory to mount any
  FUSE filesystem on), lazy_unmount, sweep_dead_mounts, why_fuse_unusable; MOUNT_VARIANTS
  and variant_params(), the plain and ``-o fastpath`` mounts suites run on.
- users: the unprivileged test account: unprivileged_user, run_as_user, as_user.
- kernel: the kernel's own mqueue: why_kernel_mqueue_unusable, mqueue_mount,
  private_ipc_namespace.
- backends: kernel_backend and mqfs_backend with the same limits, for side-by-side tests.
- shim: the LD_PRELOAD shim: build_shim, build_c_program, shim_env, run_program, on_kernel,
  unique_queue_name.
- libc: ctypes calls Python lacks: sigtimedwait (with si_value), unshare, setns.
- procs: /proc: task_state, blocked_in_mq_call.
- crash: kill -9 of a journaled mount's daemon under load (run_until_killed, drain,
  count), for tests/fs/test_state.py and the benchmark.

Nothing is imported here, so a module takes only what it uses (conformance children start
with ``python -c`` and must not pay for pytest).
"""
