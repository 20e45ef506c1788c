"""`run_cli`: the digitkit command line run in-process, for tests and conftest's fixtures alike."""

from __future__ import annotations


def run_cli(*args, **kwargs):
    """`digitkit ARGS...` in-process through click's CliRunner (arguments may be paths)."""
    from click.testing import CliRunner

    from digitkit.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)
