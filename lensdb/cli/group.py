"""The `lensdb` group: one-line errors for every command, lensdb's warnings after it, and
SIGTERM handled as Ctrl-C. The command modules add their commands to `main`."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings

import click

from lensdb import __version__
from lensdb.errors import DamagedRunsWarning, LensdbError, Terminated, folded

DEBUG_ENV = "LENSDB_DEBUG"


class _Main(click.Group):
    """Turns errors into one line on stderr and a non-zero exit (LENSDB_DEBUG=1 adds the
    traceback), and lensdb's warnings into `lensdb: warning: ...` lines once a command succeeds."""

    def invoke(self, ctx):
        pending: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("always", DamagedRunsWarning)
            shown = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if issubclass(category, DamagedRunsWarning):
                    pending.append(str(message))
                else:
                    shown(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            try:
                with _terminate_as_interrupt():
                    result = super().invoke(ctx)
            except LensdbError as exc:
                _fail(str(exc), exc.exit_code)
            except KeyboardInterrupt as exc:
                click.echo(f"lensdb: {_interrupted(exc)}; nothing was committed", err=True)
                sys.exit(interrupt_exit_code(exc))
            except BrokenPipeError:
                _quiet_stdout()  # the reader went away (| head): nothing left to say
                sys.exit(1)
            except OSError as exc:
                _fail(_os_error(exc), 2)
            except (UnicodeError, MemoryError) as exc:
                _fail(f"{type(exc).__name__}: {folded(exc)}", 2)
            except Exception as exc:
                if not type(exc).__module__.startswith(("duckdb", "_duckdb")):
                    raise
                _fail(folded(exc), 2)
        for message in pending:
            click.echo(f"lensdb: warning: {_printable(message)}", err=True)
        return result


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread, so that a command
    stops as after Ctrl-C: its `finally` blocks remove what it staged. A second SIGTERM
    while they run kills the process as by default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(exc: BaseException) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"


def interrupt_exit_code(exc: BaseException) -> int:
    """128 + the signal: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130


def _fail(message: str, exit_code: int):
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        traceback.print_exc()
    click.echo(f"lensdb: error: {_printable(message)}", err=True)
    sys.exit(exit_code)


def _printable(message: str) -> str:
    """One line whatever the message holds (a path with a newline, undecodable bytes)."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def _os_error(exc: OSError) -> str:
    where = " and ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    what = exc.strerror or folded(exc)
    return f"{where}: {what}" if where else what


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lensdb")
def main():
    """Logit-lens records of causal language models, as a Parquet warehouse with SQL views.

    \b
    lensdb extract MODEL         run a prompt set through a model, commit one run
    lensdb query "SQL"           query every run with the versioned v1 views
    lensdb runs                  list the runs;  lensdb show RUN;  lensdb rm RUN
    lensdb export --out DIR      write the original experiment's JSON/CSV files
    lensdb import-legacy DIR     bring legacy output folders into the warehouse
    lensdb plot heatmap|curves|lenses --out F   figures (.png/.svg/.pdf/.html)
    lensdb report --out report.html             one self-contained HTML page
    lensdb train-lens MODEL      train a tuned lens (per-layer affine translators)
    lensdb sweep MODELS.txt      extract a list of models, resuming where it stopped
    """
