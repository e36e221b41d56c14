"""The daemon half: the store (the data), queue semantics (waiting, limits, notification),
the FUSE operations, and serve (mount and run). Nothing here imports the client or the CLI."""
