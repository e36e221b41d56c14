"""The `mqfs` command: main(argv=None) parses and dispatches, commands holds the subcommands,
launch starts daemons (for `mqfs mount`, the tests and the benchmark)."""

from mqfs.cli.main import main

__all__ = ["main"]
