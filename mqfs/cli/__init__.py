"""The `mqfs` command: main(argv=None) parses and dispatches; commands holds the subcommands."""

from mqfs.cli.main import daemon_command, main

__all__ = ["daemon_command", "main"]
