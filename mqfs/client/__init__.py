"""The client half: calls (one function per ioctl), backends (an mqfs mount or the kernel's
mqueue), api (posix_ipc-shaped MessageQueue) and dump. Nothing here imports the server."""
