"""Side-by-side POSIX conformance: every scenario runs on the kernel's mqueue and on mqfs."""
