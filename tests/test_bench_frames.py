"""A SampleRNN's rows time whole frames of its top tier: --samples 100 of frames of 16 is timed as 112. It is said
(bench.frames_said), where it was only seen in the table's samples column."""

from __future__ import annotations

from bench_helpers import Instant
from wavegen import cli, generate
from wavegen.bench import bench_generation, format_table
from wavegen.bench_profile import profile_generation

FRAMES = "whole frames of 16 (the model's top tier)"  # samplernn-tiny's frame sizes: 16, 4


def test_samples_rounded_up_to_whole_frames_are_said(monkeypatch):
    monkeypatch.setitem(generate._ENGINES, "torch", {"samplernn": Instant})
    monkeypatch.setitem(generate._ENGINES, "instant", {"samplernn": Instant})
    lines = []
    result = bench_generation("samplernn-tiny", ["torch", "instant"], [1], samples=100, torch_samples=20, repeats=1,
                              progress=lines.append)
    assert lines[:2] == [f"--samples 100 timed as 112: {FRAMES}", f"--torch-samples 20 timed as 32: {FRAMES}"]
    assert [r["samples"] for r in result["rows"]] == [32, 112]
    lines.clear()  # whole frames asked: nothing to say
    bench_generation("samplernn-tiny", ["torch", "instant"], [1], samples=112, repeats=1, progress=lines.append)
    assert not [line for line in lines if "timed as" in line], lines


def test_samples_no_row_is_timed_on_are_not_said(monkeypatch):
    """Torch rows alone are timed on --torch-samples (or on --samples up to 1024): a --samples no row is timed on is
    not said to be timed as more (it said '--samples 100 timed as 112' where every row was timed on 32)."""
    monkeypatch.setitem(generate._ENGINES, "torch", {"samplernn": Instant})
    lines = []
    result = bench_generation("samplernn-tiny", ["torch"], [1], samples=100, torch_samples=32, repeats=1,
                              progress=lines.append)
    assert lines == ["torch batch 1: 32 samples per stream"]
    assert [r["samples"] for r in result["rows"]] == [32]
    lines.clear()  # no --torch-samples: the torch rows are timed on --samples, so it is said
    result = bench_generation("samplernn-tiny", ["torch"], [1], samples=100, repeats=1, progress=lines.append)
    assert lines == [f"--samples 100 timed as 112: {FRAMES}", "torch batch 1: 112 samples per stream"]
    assert [r["samples"] for r in result["rows"]] == [112]


def test_the_tables_note_names_other_rows_only_where_there_are_some(monkeypatch):
    """Torch rows alone on --torch-samples 32: the note said '(torch rows timed on 32 samples per stream, the others
    on 112 ...)', of rows the table does not have; the torch column says their 32. Beside other rows it is said."""
    monkeypatch.setitem(generate._ENGINES, "torch", {"samplernn": Instant})
    monkeypatch.setitem(generate._ENGINES, "instant", {"samplernn": Instant})
    alone = format_table(bench_generation("samplernn-tiny", ["torch"], [1], samples=100, torch_samples=32, repeats=1))
    assert "the others" not in alone and "timed on" not in alone, alone
    both = format_table(bench_generation("samplernn-tiny", ["torch", "instant"], [1], samples=100, torch_samples=32,
                                         repeats=1))
    assert "(torch rows timed on 32 samples per stream, the others on 112; rates are per second, best of 1)" in both


def test_the_cli_says_the_samples_timed(monkeypatch, caplog, capsys):
    monkeypatch.setitem(generate._ENGINES, "instant", {"samplernn": Instant})
    with caplog.at_level("INFO", logger="wavegen"):
        assert cli.main(["bench", "--model", "samplernn-tiny", "--backends", "instant", "--batch", "1",
                         "--samples", "100", "--repeats", "1"]) == 0
    assert f"--samples 100 timed as 112: {FRAMES}" in caplog.messages
    assert "instant        1      112 " in capsys.readouterr().out


def test_a_profiles_samples_rounded_up_are_said():
    lines = []
    result = profile_generation("samplernn-tiny", ["numba"], [1], samples=100, dram_mbytes=8, progress=lines.append)
    assert lines[0] == f"--samples 100 timed as 112: {FRAMES}"
    assert result["profiles"][0]["backend"] == "numba"


def test_the_samples_help_says_a_samplernns_are_whole_frames():
    import argparse

    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    (samples,) = [a for a in sub.choices["bench"]._actions if "--samples" in a.option_strings]
    assert "a SampleRNN's rounded up to whole frames of its top tier, said when it is" in samples.help
