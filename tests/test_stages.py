"""recipes/stages.sh: the stage gating every recipe sources (demo, longform, stream, bench, accelerate;
conditioned for its range check)."""

import subprocess
from pathlib import Path

import pytest

STAGES = Path(__file__).resolve().parents[1] / "recipes" / "stages.sh"


def _run(tmp_path, stage, stop_stage, body):
    script = f'dir="{tmp_path}"; stage={stage}; stop_stage={stop_stage}; source "{STAGES}"\n{body}'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


BODY = """run_stage 1 "first" echo ran-1
run_step 2 speed-a "speed of a" echo ran-2a
run_step 2 speed-b "speed of b" echo ran-2b
run_stage 3 "last" echo ran-3"""


def test_steps_run_once_each_with_their_own_marker(tmp_path):
    first = _run(tmp_path, 1, 3, BODY)
    assert [line for line in first if line.startswith("ran-")] == ["ran-1", "ran-2a", "ran-2b", "ran-3"]
    assert sorted(p.name for p in (tmp_path / ".done").iterdir()) == ["1", "3", "speed-a", "speed-b"]

    (tmp_path / ".done" / "speed-b").unlink()  # redo one step of stage 2, not the whole stage
    again = _run(tmp_path, 1, 3, BODY)
    assert [line for line in again if line.startswith("ran-")] == ["ran-2b"]
    assert f"== stage 2: speed of a (done before, skipped; to redo it, delete {tmp_path}/.done/speed-a)" in again


def test_stages_outside_the_range_neither_run_nor_leave_markers(tmp_path):
    out = _run(tmp_path, 2, 2, BODY)
    assert [line for line in out if line.startswith("ran-")] == ["ran-2a", "ran-2b"]
    assert sorted(p.name for p in (tmp_path / ".done").iterdir()) == ["speed-a", "speed-b"]


def test_a_failing_step_leaves_no_marker(tmp_path):
    script = f'set -e; dir="{tmp_path}"; stage=1; stop_stage=1; source "{STAGES}"\nrun_stage 1 "fails" false'
    assert subprocess.run(["bash", "-c", script], capture_output=True).returncode != 0
    assert not (tmp_path / ".done" / "1").exists()


def _run_unchecked(tmp_path, stage, stop_stage, body):
    script = f'set -euo pipefail; dir="{tmp_path}/work"; stage={stage}; stop_stage={stop_stage}; source "{STAGES}"\n{body}'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True)


@pytest.mark.parametrize("stage, stop_stage, option, bad", [
    ("abc", "100", "--stage", "abc"), ("0", "abc", "--stop-stage", "abc"), ("''", "3", "--stage", ""),
    ("1.5", "3", "--stage", "1.5"), ("-1", "3", "--stage", "-1"), ("0", "2x", "--stop-stage", "2x"),
    ("' 1'", "3", "--stage", " 1"),
])
def test_a_range_that_is_not_stage_numbers_is_a_usage_error_before_any_stage(tmp_path, stage, stop_stage, option,
                                                                               bad):
    out = _run_unchecked(tmp_path, stage, stop_stage, BODY)
    assert out.returncode == 2
    assert f"{option} takes a stage number (0, 1, 2 ...), not '{bad}'" in out.stderr
    assert "ran-" not in out.stdout and "integer expression" not in out.stderr
    assert not (tmp_path / "work").exists()  # nothing written, not even the marker folder


def test_stage_numbers_are_decimal_even_with_a_leading_zero(tmp_path):
    out = _run_unchecked(tmp_path, "08", "09", 'run_stage 8 "eighth" echo ran-8\necho next=$((stage + 1))')
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["ran-8", "next=9"]


TRAIN = 'run_training 3 "$steps" "train for $steps steps" echo trained-to-$steps'


def _train(tmp_path, steps, fail=False):
    body = f"steps={steps}\n" + (TRAIN.replace("echo", "false; echo") if fail else TRAIN)
    out = _run_unchecked(tmp_path, 0, 100, body)
    return out.returncode, out.stdout.splitlines()


def test_a_training_stage_trains_on_when_asked_for_more_steps_than_its_marker_records(tmp_path):
    marker = tmp_path / "work" / ".done" / "3"
    assert _train(tmp_path, 5) == (0, ["== stage 3: train for 5 steps", "trained-to-5"])
    assert marker.read_text() == "5\n"
    # deleting its marker would not redo a training (the run resumes and ends at once): it says how to train on
    assert _train(tmp_path, 5) == (0, ["== stage 3: train for 5 steps (trained to step 5 before, skipped; a larger "
                                       "--steps trains on)"])
    assert _train(tmp_path, 3) == (0, ["== stage 3: train for 3 steps (trained to step 5 before, skipped; a larger "
                                       "--steps trains on)"])
    assert _train(tmp_path, 10) == (0, ["== stage 3: train for 10 steps (trained to step 5 before: training on)",
                                        "trained-to-10"])
    assert marker.read_text() == "10\n"
    assert _train(tmp_path, 10)[1] == ["== stage 3: train for 10 steps (trained to step 10 before, skipped; a larger "
                                       "--steps trains on)"]


def test_a_training_marker_without_a_step_count_resumes_the_run(tmp_path):
    (tmp_path / "work" / ".done").mkdir(parents=True)
    (tmp_path / "work" / ".done" / "3").touch()  # written by run_stage before markers recorded steps
    assert _train(tmp_path, 5) == (0, ["== stage 3: train for 5 steps", "trained-to-5"])
    assert (tmp_path / "work" / ".done" / "3").read_text() == "5\n"


def test_a_failing_training_keeps_the_marker_it_had(tmp_path):
    assert _train(tmp_path, 5)[0] == 0
    assert _train(tmp_path, 10, fail=True)[0] != 0
    assert (tmp_path / "work" / ".done" / "3").read_text() == "5\n"
    assert _train(tmp_path, 10, fail=True)[0] != 0  # still asked for more: tried again
