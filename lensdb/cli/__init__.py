"""The `lensdb` command line: parses arguments and calls library functions.

    group.py               the `lensdb` group: one-line errors, warnings, SIGTERM as Ctrl-C
    model_commands.py      extract, train-lens, sweep (extract's options come from ExtractConfig)
    warehouse_commands.py  query, export, import-legacy, runs, show, cleanup, rm
    figure_commands.py     plot ..., report

Shared options are declared once in lensdb/cli_options.py.

Model libraries (torch, transformers) are imported only by the commands that need them,
so `lensdb --help` and `lensdb query` start quickly.
"""

from __future__ import annotations

# Importing the command modules adds their commands to the group.
from lensdb.cli import figure_commands, model_commands, warehouse_commands  # noqa: F401
from lensdb.cli.group import interrupt_exit_code, main
from lensdb.cli.model_commands import _sweep_options, extract  # noqa: F401 - tests/test_sweep.py

__all__ = ["interrupt_exit_code", "main"]
