"""Running the CLI in-process and checking its one-line errors."""

from __future__ import annotations

from click.testing import CliRunner

from lensdb.cli import main


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *fragments: str) -> str:
    """A non-zero exit with exactly one line on stderr, `lensdb: error: ...`, holding every fragment."""
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lensdb: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
