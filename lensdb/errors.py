"""User-facing errors: each one is printed as a single line by the CLI."""


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
