"""A negative number in exponent form (``--seconds -1e-3``) or with underscores (``-1_000``, as float() and int()
read it), or ``-inf`` or ``-nan``, is a value of a number option, as ``-0.001`` is, so that the command's own check
names it: argparse's pattern of a negative number has none of them, and took it for an option ("argument --seconds:
expected one argument", with the usage)."""

from __future__ import annotations

import argparse
import math

import pytest

from wavegen.cli import build_parser, main


def _options(kind=float):
    """(command, option, its dest, the arguments its parser requires besides) for every option of type ``kind`` of
    every command."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    found = []
    for command, parser in commands.items():
        required = []
        for action in parser._actions:
            if not action.option_strings and action.nargs != 0:
                required.append("x")
            elif action.required:
                required += [action.option_strings[0], "1"]
        found += [(command, action.option_strings[-1], action.dest, required) for action in parser._actions
                  if action.type is kind]
    return found


FLOAT_OPTIONS = _options(float)
INT_OPTIONS = _options(int)


def test_every_command_has_float_options_to_check():
    assert {"render", "serve", "prep"} <= {command for command, *_ in FLOAT_OPTIONS}
    assert {"render", "train", "bench", "serve"} <= {command for command, *_ in INT_OPTIONS}


NEGATIVE_NUMBERS = [("-1e-3", -0.001), ("-2.5E+2", -250.0), ("-inf", -math.inf), ("-Infinity", -math.inf),
                    ("-nan", math.nan), ("-NaN", math.nan), ("-1_000", -1000.0), ("-1_0.2_5e1_0", -10.25e10),
                    ("-.5_5", -0.55)]


@pytest.mark.parametrize("value, number", NEGATIVE_NUMBERS, ids=[value for value, _ in NEGATIVE_NUMBERS])
@pytest.mark.parametrize("command, option, dest, required", FLOAT_OPTIONS,
                         ids=[f"{command} {option}" for command, option, *_ in FLOAT_OPTIONS])
def test_a_float_option_takes_a_negative_number_in_exponent_form(command, option, dest, required, value, number):
    parsed = getattr(build_parser().parse_args([command, *required, option, value]), dest)
    assert math.isnan(parsed) if math.isnan(number) else parsed == number


@pytest.mark.parametrize("command, option, dest, required", INT_OPTIONS,
                         ids=[f"{command} {option}" for command, option, *_ in INT_OPTIONS])
def test_a_whole_number_option_takes_a_negative_number_with_underscores(command, option, dest, required):
    assert getattr(build_parser().parse_args([command, *required, option, "-1_000"]), dest) == -1000


def test_render_names_a_negative_seconds_in_exponent_form(tmp_path, capsys):
    """The render's own message, as for --seconds -0.001, not argparse's usage and 'expected one argument'."""
    code = main(["render", str(tmp_path / "model"), "--seconds", "-1e-3", "--out", str(tmp_path / "out")])
    assert (code, capsys.readouterr().err) == (
        2, "wavegen render: error: --seconds -0.001: must be a finite number of seconds above zero\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, named", [("-inf", "-inf"), ("-nan", "nan")])
def test_render_names_a_negative_infinity_or_nan_seconds(tmp_path, capsys, value, named):
    """-inf and -nan: the render's own one line naming the value too (was 'expected one argument' and the usage)."""
    code = main(["render", str(tmp_path / "model"), "--seconds", value, "--out", str(tmp_path / "out")])
    assert (code, capsys.readouterr().err) == (
        2, f"wavegen render: error: --seconds {named}: must be a finite number of seconds above zero\n")
    assert not (tmp_path / "out").exists()


def test_a_negative_number_with_underscores_gets_the_commands_own_error(tmp_path, capsys):
    """--seconds -1_000 and --seed -1_000: the command's one line naming the value (was argparse's 'expected one
    argument' and the usage)."""
    code = main(["render", str(tmp_path / "model"), "--seconds", "-1_000", "--out", str(tmp_path / "out")])
    assert (code, capsys.readouterr().err) == (
        2, "wavegen render: error: --seconds -1000.0: must be a finite number of seconds above zero\n")
    assert main(["bench", "--model", "wavenet-tiny", "--seed", "-1_000"]) == 2
    assert capsys.readouterr().err == "wavegen bench: error: --seed -1000: must be a whole number from 0 to " \
                                      f"{2**64 - 1}\n"
