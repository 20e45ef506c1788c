"""Error hierarchy; each class carries the process exit code the CLI maps it to.

Exit codes (documented in the README):
  0  everything worked
  1  could not run (bad data, bad model, unwritable output, missing dependency)
  2  usage error (bad option or argument)
  3  partial: the run finished but some inputs failed (infer); good results were written
  4  validation failed: an artifact was produced but does not meet its stated tolerance
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_VALIDATION = 4


class DigitkitError(Exception):
    """Base of every error digitkit reports to the user as one line."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(DigitkitError):
    """A bad option value or a combination of options that cannot work."""

    exit_code = EXIT_USAGE


class DataError(DigitkitError):
    """A data file is missing, truncated, corrupt or fails its checksum."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageError(DataError):
    """One image could not be decoded or does not look like an image."""


class ModelError(DigitkitError):
    """A model file is missing, of the wrong type, or unsafe to load."""


class OutputExistsError(DigitkitError):
    """Refusing to overwrite something the user produced."""

    def __init__(self, path, hint: str = "pass --force to overwrite"):
        self.path = str(path)
        super().__init__(f"{self.path}: already exists; {hint}")


class DependencyError(DigitkitError):
    """An optional dependency is not installed."""


class PartialFailure(DigitkitError):
    """The run completed but some inputs failed; results for the rest were written."""

    exit_code = EXIT_PARTIAL


class ValidationError(DigitkitError):
    """An artifact was produced but failed its parity or accuracy check."""

    exit_code = EXIT_VALIDATION


def missing_extra(what: str, extra: str) -> DependencyError:
    """The one-line error for a command whose optional extra is not installed."""
    return DependencyError(f"{what} needs the '{extra}' extra: pip install 'digitkit[{extra}]'")


def one_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (library errors can be pages long)."""
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:limit]
