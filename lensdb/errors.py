"""User-facing errors: each one is printed as a single line by the CLI, and the helpers that
turn another library's exception into that line."""


class LensdbError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2


class ModelError(LensdbError):
    """The model cannot be found, reached or used."""


class PromptError(LensdbError):
    """A prompt file or prompt is invalid."""


class WarehouseError(LensdbError):
    """The warehouse is missing, unwritable, empty or damaged."""


class QueryError(LensdbError):
    """A query failed."""


class LegacyFormatError(LensdbError):
    """A legacy file does not follow the legacy format."""


class DamagedRunsWarning(UserWarning):
    """Damaged runs were left out of the views (the CLI prints it as one warning line)."""


class MissingDependency(LensdbError, ImportError):
    """An optional package that a feature needs is not installed."""


class TunedLensError(LensdbError):
    """A tuned lens cannot be read, trained or stored, or does not fit the model."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's, `kill`'s): raised where Ctrl-C would be, so the same cleanup runs;
    the CLI exits with 143 (128 + SIGTERM) instead of 130."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (tracebacks and hints below it dropped)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def folded(exc: BaseException, limit: int | None = None) -> str:
    """An exception's whole message on one line (white space folded), cut at `limit` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if limit is None else text[:limit]
