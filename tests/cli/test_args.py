"""One argparse type per kind of value: every subcommand answers a bad ``--threads`` or rho
alike, with one line and exit 2, before any work."""

from __future__ import annotations

import argparse

import pytest

from daisy_upstream.cli import SUBCOMMANDS, subcommand
from daisy_upstream.cli import args as types


def options(command: str) -> dict:
    """``{option string: its action}`` of a subcommand's parser."""
    _, parser = subcommand(command)
    return {flag: action for action in parser._actions for flag in action.option_strings}


WITH = {flag: sorted(c for c in SUBCOMMANDS if flag in options(c)) for flag in ("--threads", "--rho")}


def test_the_repeated_options_share_one_type():
    assert len(WITH["--threads"]) >= 6 and len(WITH["--rho"]) >= 6
    for command in WITH["--threads"]:
        assert options(command)["--threads"].type is types.threads, command
    for command in WITH["--rho"]:
        assert options(command)["--rho"].type is types.rho, command


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--threads", "-1", "argument --threads: must be >= 0, got -1"),
        ("--threads", "two", "argument --threads: 'two' is not an integer"),
        ("--rho", "1.5", "argument --rho: must be in [0, 1], got 1.5"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(flag, value, message, capsys):
    for command in WITH[flag]:  # the parser main() uses (never the command itself)
        with pytest.raises(SystemExit) as exit_:
            subcommand(command)[1].parse_args([flag, value])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.splitlines() == [f"daisy {command}: error: {message} (see daisy {command} --help)"], err


def test_values_in_range_pass():
    assert types.threads("0") == 0 and types.threads("3") == 3
    assert types.rho("0") == 0.0 and types.rho("1") == 1.0 and types.rho("0.76") == 0.76
    assert types.positive_int("1") == 1 and types.positive_float("0.5") == 0.5
    for parse, text in ((types.positive_int, "0"), (types.positive_float, "0"), (types.rho, "-0.1")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
