"""digitkit.cli.conventions: the shared flag decorators parse what the model layer accepts
(one number or one per channel, HxW, R,G,B), and a bad value is a usage error (exit 2) naming
the flag."""

from __future__ import annotations

import click
from click.testing import CliRunner

from digitkit.cli.conventions import (
    convention_options,
    policy_options,
    take_convention_flags,
    take_policy_flags,
)
from digitkit.model.conventions import ConventionFlags, PolicyFlags


def _command(seen: dict):
    @click.command()
    @convention_options
    @policy_options
    def cmd(**options):
        seen["conventions"] = take_convention_flags(options)
        seen["policy"] = take_policy_flags(options)
        seen["left"] = options

    return cmd


def test_flags_parse_into_their_values():
    seen = {}
    result = CliRunner().invoke(_command(seen), [
        "--preprocess", "torch", "--input-mean", "0.5,0.4,0.3", "--input-std", "0.2,0.2,0.2",
        "--channel-order", "bgr", "--input-size", "96x64", "--resize", "letterbox",
        "--pad", "114,114,114", "--interpolation", "area"])
    assert result.exit_code == 0, result.output
    assert seen["conventions"] == ConventionFlags(preset="torch", mean=(0.5, 0.4, 0.3),
                                                  std=(0.2, 0.2, 0.2), channel_order="bgr")
    assert seen["policy"] == PolicyFlags(input_size=(96, 64), resize="letterbox",
                                         pad=(114, 114, 114), interpolation="area")
    assert seen["left"] == {}
    seen.clear()
    assert CliRunner().invoke(_command(seen), ["--input-scale", "standardized",
                                               "--input-mean", "0.1307", "--input-std",
                                               "0.3081"]).exit_code == 0
    assert seen["conventions"].mean == 0.1307  # one value stays one number (digits)


def test_bad_values_name_their_flag():
    for args, message in ((["--input-mean", "a,b"], "give one number, or one per channel"),
                          (["--preprocess", "keras"], "'keras' is not one of"),
                          (["--resize", "stretch"], "'stretch' is not one of")):
        result = CliRunner().invoke(_command({}), args)
        assert result.exit_code == 2 and message in result.output
