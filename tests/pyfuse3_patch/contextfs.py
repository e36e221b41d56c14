"""A minimal pyfuse3 filesystem for testing mqfs's pyfuse3 patches (run as a script).

One worker task serves every request (min_tasks = max_tasks = 1), so a request context left
behind by one request would be seen by the next. ``/probe`` reports what
``current_request_context()`` says inside ``lookup`` (a handler the patch does not give a
context): its st_size is 0 for None, else the uid + 1. ``/file`` is readable by anyone and
its read sets the context (the patched read handler does).
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pyfuse3
import trio

FILE_INODE = pyfuse3.ROOT_INODE + 1
PROBE_INODE = pyfuse3.ROOT_INODE + 2


class ContextFS(pyfuse3.Operations):
    def __init__(self) -> None:
        super().__init__()
        self.probe_size = 0

    def _attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        entry.attr_timeout = entry.entry_timeout = 0
        if inode == pyfuse3.ROOT_INODE:
            entry.st_mode = stat.S_IFDIR | 0o755
        elif inode == FILE_INODE:
            entry.st_mode = stat.S_IFREG | 0o444
            entry.st_size = 4
        else:
            entry.st_mode = stat.S_IFREG | 0o444
            entry.st_size = self.probe_size
        return entry

    async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
        return self._attributes(inode)

    async def lookup(self, parent: int, name: bytes, ctx: object = None) -> pyfuse3.EntryAttributes:
        if name == b"file":
            return self._attributes(FILE_INODE)
        if name == b"probe":
            seen = pyfuse3.current_request_context()
            self.probe_size = 0 if seen is None else seen.uid + 1
            return self._attributes(PROBE_INODE)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=inode, direct_io=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return b"data"[off : off + size]


def main() -> None:
    pyfuse3.init(ContextFS(), sys.argv[1], {"fsname=contextfs", "allow_other"})
    try:
        os.write(1, b"ready\n")
        trio.run(pyfuse3.main, 1, 1)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
