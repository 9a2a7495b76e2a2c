"""A bench backend named with its precision is the same backend: "torch-fp32" is the torch engine's rows."""

from test_bench import Sleeper, SlowSleeper
from wavegen import cli, generate
from wavegen.bench import bench_generation, format_table


def test_torch_fp32_rows_are_the_torch_rows(monkeypatch):
    """--backends torch-fp32,numba: the torch-fp32 rows were timed on --samples (not the torch rows'
    --torch-samples), the others had no speed-up over them ("-"), and the table did not say what they were timed on."""
    engines = {**generate._ENGINES, "torch": {"wavenet": SlowSleeper}, "sleeper": {"wavenet": Sleeper}}
    monkeypatch.setattr(generate, "_ENGINES", engines)
    result = bench_generation("wavenet-tiny", ["torch-fp32", "sleeper"], [2], samples=128, torch_samples=32,
                              repeats=1)
    rows = {r["backend"]: r for r in result["rows"]}
    assert rows["torch-fp32"]["samples"] == 32 and rows["sleeper"]["samples"] == 128
    assert rows["torch-fp32"]["speedup_vs_torch"] == 1.0
    # over the torch-fp32 row's rate, exactly (a range about the engines' 4x missed by a sleep woken late on a
    # busy machine: 4.98 seen against a bound of 5)
    assert rows["sleeper"]["speedup_vs_torch"] == rows["sleeper"]["samples_per_second"] / \
        rows["torch-fp32"]["samples_per_second"]
    assert "(torch rows timed on 32 samples per stream, the others on 128;" in format_table(result)


def test_torch_samples_with_a_torch_fp32_row_is_taken(capsys, monkeypatch):
    """--torch-samples with --backends torch-fp32 was refused: "--backends torch-fp32 has none" (torch rows)."""
    monkeypatch.setattr(generate, "_ENGINES", {**generate._ENGINES, "torch": {"wavenet": SlowSleeper}})
    assert cli.main(["bench", "--model", "wavenet-tiny", "--backends", "torch-fp32", "--batch", "1",
                     "--samples", "256", "--torch-samples", "16", "--repeats", "1", "-q"]) == 0
    row = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("torch-fp32 ")]
    assert [r[:3] for r in row] == [["torch-fp32", "1", "16"]], row
