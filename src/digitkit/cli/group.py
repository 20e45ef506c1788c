"""The `digitkit` click group: the subcommands, each imported only when invoked (or listed by
--help), and the one place an error becomes its exit code and one line.

None of the subcommands' modules imports TensorFlow at module level: `digitkit infer
model.onnx ...` must never pay TensorFlow's seconds of import time. The program itself
(`main`, and Ctrl-C before and after a command) is `digitkit.cli`.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from digitkit import __version__
from digitkit.cli import EXIT_INTERRUPTED, interrupts_raised, said_interrupted
from digitkit.errors import EXIT_ERROR, EXIT_USAGE, DigitkitError

# TensorFlow's C++ INFO lines (oneDNN, CPU features) drown the CLI's own output; warnings and
# errors still show. Set before any command imports TensorFlow; a user's own value wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Set to 1 to see an error's traceback and its causes above its one-line message.
DEBUG_ENV = "DIGITKIT_DEBUG"

# name -> module under digitkit.cli; each module defines a click command called `command`.
_COMMANDS = {
    "train": "train",
    "export": "export",
    "view": "view",
    "infer": "infer",
    "bench": "bench",
    "data": "data",
}


class _Failure(click.ClickException):
    """Carries a DigitkitError through click's standalone mode with its own exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None):
        click.echo(f"digitkit: error: {self.message}", err=True)
        if self.exit_code == EXIT_INTERRUPTED:
            said_interrupted()


def _debug(err: BaseException) -> None:
    """With DIGITKIT_DEBUG set (to anything but 0), the traceback and the chain of causes of an
    error go to stderr before its one line: the one line is for users, this is for a bug report."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exception(err, file=sys.stderr)


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(name for name in _COMMANDS if self._load(name) is not None)

    def get_command(self, ctx, name):
        return self._load(name)

    def invoke(self, ctx):
        # Mapping lives here, not in main(), so CliRunner sees the same exit codes as a shell.
        try:
            with interrupts_raised():  # Ctrl-C: KeyboardInterrupt, for the command to see
                return super().invoke(ctx)
        except click.UsageError as err:
            # A bad option of a subcommand: the same one-line form as every other error,
            # plus where to read about it.
            where = f"digitkit {err.ctx.info_name}" if err.ctx and err.ctx.parent else "digitkit"
            raise _Failure(f"{err.format_message().rstrip('.')} (see '{where} --help')",
                           EXIT_USAGE) from err
        except DigitkitError as err:
            _debug(err)
            raise _Failure(err.message, err.exit_code) from err
        except KeyboardInterrupt as err:
            _debug(err)
            raise _Failure("interrupted", EXIT_INTERRUPTED) from err
        except OSError as err:
            _debug(err)
            # Disk full, permission denied and friends: one line naming the file.
            where = f"{err.filename}: " if getattr(err, "filename", None) else ""
            raise _Failure(f"{where}{err.strerror or err}", EXIT_ERROR) from err

    @staticmethod
    def _load(name):
        module = _COMMANDS.get(name)
        if module is None:
            return None
        try:
            return importlib.import_module(f"digitkit.cli.{module}").command
        except ModuleNotFoundError as e:
            # A command whose module has not landed is simply not offered.
            if e.name == f"digitkit.cli.{module}":
                return None
            raise


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="digitkit")
def cli():
    """Train, export, serve and benchmark handwritten-digit classifiers.

    \b
    Exit codes: 0 ok, 1 could not run, 2 usage error,
    3 some inputs failed (results for the rest were written),
    4 an artifact failed validation, 130 interrupted.
    """
