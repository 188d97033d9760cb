"""`import lensdb` and `lensdb --help` stay light: no torch, no model libraries."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "transformer_lens")


def modules_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sorted(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(output.split())


def test_import_lensdb_does_not_import_torch():
    loaded = modules_after("import lensdb, lensdb.cli, lensdb.catalog, lensdb.prompts, lensdb.runs, lensdb.output, lensdb.warehouse.health")
    assert not loaded & set(HEAVY)


def test_help_does_not_import_torch():
    loaded = modules_after(
        "from click.testing import CliRunner\n"
        "from lensdb.cli import main\n"
        "for args in (['--help'], ['extract', '--help'], ['query', '--help'], ['export', '--help'], ['runs', '--help'], ['show', '--help'], ['rm', '--help'], ['query', '--list'], ['train-lens', '--help']):\n"
        "    result = CliRunner().invoke(main, args)\n"
        "    assert result.exit_code == 0, result.output"
    )
    assert not loaded & set(HEAVY)
