"""mqfs: POSIX message queues as a FUSE filesystem, with non-destructive peek.

The client API is re-exported here lazily, so that importing a lower layer
(``mqfs.server.store``, ``mqfs.wire``) never drags in trio or pyfuse3.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "AsyncMessageQueue",
    "BusyError",
    "Error",
    "ExistentialError",
    "MessageQueue",
    "PermissionsError",
    "SignalError",
    "__version__",
    "unlink_message_queue",
]
_CLIENT_NAMES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from mqfs.client import api

        return getattr(api, name)
    raise AttributeError(f"module 'mqfs' has no attribute {name!r}")
