"""recipes/stages.sh: the stage gating every recipe sources (demo, longform, stream, bench)."""

import subprocess
from pathlib import Path

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
    assert "== stage 2: speed of a (done before, skipped)" in again


def test_stages_outside_the_range_neither_run_nor_leave_markers(tmp_path):
    out = _run(tmp_path, 2, 2, BODY)
    assert [line for line in out if line.startswith("ran-")] == ["ran-2a", "ran-2b"]
    assert sorted(p.name for p in (tmp_path / ".done").iterdir()) == ["speed-a", "speed-b"]


def test_a_failing_step_leaves_no_marker(tmp_path):
    script = f'set -e; dir="{tmp_path}"; stage=1; stop_stage=1; source "{STAGES}"\nrun_stage 1 "fails" false'
    assert subprocess.run(["bash", "-c", script], capture_output=True).returncode != 0
    assert not (tmp_path / ".done" / "1").exists()
