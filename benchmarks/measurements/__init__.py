"""The measurements, by area; each ``measure_*`` function measures one figure or one group of
figures measured together, and adds their rows and targets to the report.

- throughput: send+receive pairs on the kernel and mqfs, the FUSE floor of mqfs and of a
  minimal C libfuse daemon, a C program on the kernel and under the shim, 2+2 processes
  (rows 1, 2, 3 and 1+3; targets a, l, m)
- reading: peek, cat, the dump, ``ls -l`` and the FUSE requests behind it (rows 3;
  targets b, c, d)
- memory: daemon RSS per queued message, per empty queue, over queue churn (targets e, f, g)
- race: a blocked reader killed as a message arrives, kernel against mqfs (target h)
- durability: with -o state=DIR, the cost of the journal, kill -9 under load, the journal's
  size (targets i, j, k)
- fastpath: ``-o fastpath`` against the kernel: the C program under the shim, 1+1 and 2+2
  processes, the Python client, the daemon's CPU per pair (targets r, s, t, u, v; a hook
  for w and the crash figures)
"""
