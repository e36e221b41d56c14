"""mqfs: POSIX message queues as a FUSE filesystem, with non-destructive peek."""

__version__ = "0.1.0"
