"""The recipes' stages, run with a stand-in for wavegen (it records its arguments and trains,
renders and evaluates nothing): a stage range that is not stage numbers is refused, no stage is
marked done when it failed or had nothing to work on, and a training stage asked for more
steps trains on. Each recipe runs from a copy of recipes/ in a temporary folder, so whatever it
writes beside itself (docs/bench/.done, demo/) stays there."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import soundfile as sf

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

FAKE_WAVEGEN = r"""#!/usr/bin/env bash
# records its arguments (one call a line, \x1f between them); fails where FAKE_WAVEGEN_FAIL names the command
printf '%s\x1f' "$@" >> "$FAKE_WAVEGEN_LOG"; echo >> "$FAKE_WAVEGEN_LOG"
if [ -n "${FAKE_WAVEGEN_PWD:-}" ]; then pwd >> "$FAKE_WAVEGEN_PWD"; fi  # where it was called from
if [ "${FAKE_WAVEGEN_FAIL:-}" = "$1" ]; then echo "error: $1 failed" >&2; exit 2; fi
if [ "$1" = eval ]; then
  if [ -n "${FAKE_WAVEGEN_EVAL_STARTED:-}" ]; then  # a long eval: says it began, then waits to be interrupted
    touch "$FAKE_WAVEGEN_EVAL_STARTED"; exec python3 -c "import time; time.sleep(60)"
  fi
  result='{"nll_bits_per_sample": 3.5, "samples": 100, "split": "test",
 "per_label": {"bass": {"nll_bits_per_sample": 3.25, "samples": 50}}}'
  file=""; previous=""
  for arg in "$@"; do if [ "$previous" = --json ]; then file=$arg; fi; previous=$arg; done
  if [ -n "$file" ] && [ "${file#--}" = "$file" ]; then  # --json FILE: the result printed, the file written whole
    echo "test: 3.5000 bits/sample over 100 samples"
    printf '%s\n' "$result" > "$file.tmp" && mv "$file.tmp" "$file"
  else
    printf '%s\n' "$result"
  fi
fi
"""


@pytest.fixture
def repo(tmp_path):
    """A copy of recipes/ in tmp/repo, and a stand-in wavegen first on PATH (and in WAVEGEN)."""
    root = tmp_path / "repo"
    shutil.copytree(RECIPES, root / "recipes", ignore=shutil.ignore_patterns("__pycache__"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "wavegen"
    fake.write_text(FAKE_WAVEGEN)
    fake.chmod(0o755)
    return root


def _env(repo, **extra):
    bin_dir = repo.parent / "bin"
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "WAVEGEN": str(bin_dir / "wavegen"),
            "FAKE_WAVEGEN_LOG": str(repo.parent / "wavegen.log"), **extra}


def _recipe(repo, name, *args, **extra_env):
    return subprocess.run(["bash", str(repo / "recipes" / name / "run.sh"), *args], cwd=repo.parent,
                          capture_output=True, text=True, env=_env(repo, **extra_env), timeout=120)


def _calls(repo):
    """The stand-in's calls so far, each its list of arguments."""
    log = repo.parent / "wavegen.log"
    if not log.exists():
        return []
    return [line.rstrip("\x1f").split("\x1f") for line in log.read_text().splitlines()]


# (recipe, its arguments besides the range). The range puts the bad value in --stop-stage behind
# --stage 100, where each recipe, unchecked, ran nothing (so this test never runs a stage).
RECIPE_ARGS = [
    ("demo", []),
    ("stream", []),
    ("bench", []),
    ("longform", ["some-model"]),
    ("accelerate", []),
    ("conditioned", ["--input", "nowhere"]),
]


@pytest.mark.parametrize("name, args", RECIPE_ARGS, ids=[name for name, _ in RECIPE_ARGS])
def test_every_recipe_refuses_a_stage_range_that_is_not_stage_numbers(repo, name, args):
    work = repo.parent / "work"
    dir_opt = {"conditioned": ["--work", str(work)], "bench": []}.get(name, ["--dir", str(work)])
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    for bad in (["--stage", "100", "--stop-stage", "abc"], ["--stage", "100", "--stop-stage", "1.5"]):
        out = _recipe(repo, name, *args, *dir_opt, *bad)
        assert out.returncode == 2, (out.stdout, out.stderr)
        assert f"--stop-stage takes a stage number (0, 1, 2 ...), not '{bad[-1]}'" in out.stderr
        assert "integer expression" not in out.stderr
    assert not work.exists()
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before  # nothing written beside the recipe
    assert _calls(repo) == []


def test_the_conditioned_recipe_refuses_a_stage_that_is_not_a_number(repo):
    work = repo.parent / "work"
    out = _recipe(repo, "conditioned", "--work", str(work), "--stage", "abc")
    assert out.returncode == 2
    assert "--stage takes a stage number (0, 1, 2 ...), not 'abc'" in out.stderr
    assert not work.exists() and _calls(repo) == []


# --- recipes/conditioned/run.sh ---------------------------------------------------------------

def _conditioned(repo, work, *args, **extra_env):
    return _recipe(repo, "conditioned", "--work", str(work), "--input", str(repo.parent / "input"), *args, **extra_env)


def _corpus(work, labels):
    (work / "corpus").mkdir(parents=True)
    (work / "corpus" / "manifest.json").write_text(json.dumps({"labels": labels}))


def test_conditioned_stages_before_3_do_not_read_the_labels(repo, tmp_path):
    out = _conditioned(repo, tmp_path / "work", "--stage", "0", "--stop-stage", "0")  # a fresh folder: no corpus
    assert out.returncode == 0
    assert out.stderr == "" and "labels" not in out.stdout


def test_conditioned_stage_3_without_a_corpus_fails_and_is_not_marked_done(repo, tmp_path):
    work = tmp_path / "work"
    out = _conditioned(repo, work, "--stage", "3", "--stop-stage", "4")
    assert out.returncode != 0
    assert out.stderr.splitlines() == [f"stage 3: no corpus in {work}/corpus (no manifest.json): run stage 1 first"]
    assert not (work / ".done" / "3").exists()
    assert "stage 4" not in out.stdout and not (work / "eval_test.json").exists()
    assert _calls(repo) == []


@pytest.mark.parametrize("manifest", [{"labels": []}, {}])
def test_conditioned_stage_3_with_a_corpus_without_labels_fails_and_is_not_marked_done(repo, tmp_path, manifest):
    work = tmp_path / "work"
    (work / "corpus").mkdir(parents=True)
    (work / "corpus" / "manifest.json").write_text(json.dumps(manifest))
    out = _conditioned(repo, work, "--stage", "3", "--stop-stage", "3")
    assert out.returncode != 0
    assert len(out.stderr.splitlines()) == 1
    assert f"the corpus {work}/corpus has no labels" in out.stderr
    assert not (work / ".done" / "3").exists() and _calls(repo) == []


def test_conditioned_stage_3_renders_each_label_and_a_blend(repo, tmp_path):
    work = tmp_path / "work"
    _corpus(work, ["bass", "big bells, live: 1999"])
    out = _conditioned(repo, work, "--stage", "3", "--stop-stage", "3", "--seconds", "2")
    assert out.returncode == 0, out.stderr
    assert "labels: bass big bells, live: 1999" in out.stdout
    assert [(c[0], c[c.index("--label") + 1], c[c.index("--out") + 1]) for c in _calls(repo)] == [
        ("render", "bass", f"{work}/renders/bass"),
        ("render", "big bells, live: 1999", f"{work}/renders/big bells, live: 1999"),
        ("render", "bass:0.5,big bells, live: 1999:0.5", f"{work}/renders/blend"),
    ]
    assert (work / ".done" / "3").exists()


def test_conditioned_stage_3_fails_with_its_render(repo, tmp_path):
    work = tmp_path / "work"
    _corpus(work, ["bass", "bells"])
    out = _conditioned(repo, work, "--stage", "3", "--stop-stage", "4", FAKE_WAVEGEN_FAIL="render")
    assert out.returncode == 2
    assert not (work / ".done" / "3").exists() and "stage 4" not in out.stdout


def test_conditioned_stage_4_failing_leaves_no_results_and_no_marker(repo, tmp_path):
    work = tmp_path / "work"
    out = _conditioned(repo, work, "--stage", "4", "--stop-stage", "4", FAKE_WAVEGEN_FAIL="eval")
    assert out.returncode == 2
    assert sorted(p.name for p in work.iterdir()) == [".done"] and not any((work / ".done").iterdir())  # no
    # eval_test.json (empty or partial), no marker

    out = _conditioned(repo, work, "--stage", "4", "--stop-stage", "4")
    assert out.returncode == 0, out.stderr
    assert "test: 3.5000 bits/sample over 100 samples" in out.stdout
    assert json.loads((work / "eval_test.json").read_text())["samples"] == 100
    assert sorted(p.name for p in work.iterdir()) == [".done", "eval_test.json"]
    assert [p.name for p in (work / ".done").iterdir()] == ["4"]


def test_conditioned_renders_and_eval_are_redone_for_a_model_trained_on(repo, tmp_path):
    """After "rerun with a larger --steps trains on", stages 3 and 4 said "done before" while their renders
    and eval_test.json came from the older model: their markers now record the weights they were done for."""
    import hashlib

    work = tmp_path / "work"
    _corpus(work, ["bass", "bells"])
    weights = work / "run" / "best" / "model.safetensors"
    weights.parent.mkdir(parents=True)

    def stages_3_4(*args):
        before = len(_calls(repo))
        out = _conditioned(repo, work, "--stage", "3", "--stop-stage", "4", "--seconds", "2", *args)
        assert out.returncode == 0, out.stderr
        return [c for c in _calls(repo)[before:]], out.stdout.splitlines()

    weights.write_bytes(b"trained 5 steps")
    calls, _ = stages_3_4()
    assert [c[0] for c in calls] == ["render", "render", "render", "eval"] and not any("--restart" in c for c in calls)
    sha = hashlib.sha256(b"trained 5 steps").hexdigest()
    assert (work / ".done" / "3").read_text() == f"model {sha} seconds=2\n"
    assert (work / ".done" / "4").read_text() == f"model {sha} eval-seconds=120\n"
    calls, lines = stages_3_4()
    assert calls == [] and lines == [
        f"== stage 3: render 2 s of each label into {work}/renders (done before, skipped; to redo it, delete "
        f"{work}/.done/3)",
        f"== stage 4: NLL per label on the test split → {work}/eval_test.json (done before, skipped; to redo it, "
        f"delete {work}/.done/4)"]

    weights.write_bytes(b"trained 10 steps")  # trained on: the renders and the eval are the older model's
    calls, lines = stages_3_4()
    assert [c[0] for c in calls] == ["render", "render", "render", "eval"]
    assert all(c[-1] == "--restart" for c in calls[:3]) and "--restart" not in calls[3]
    assert lines[0] == (f"== stage 3: render 2 s of each label into {work}/renders (done before for an older "
                        "model or other settings: again)")
    assert stages_3_4()[0] == []
    assert [c[0] for c in stages_3_4("--seconds", "3")[0]] == ["render"] * 3  # another setting: stage 3 again

    (work / ".done" / "4").write_text("")  # a marker from before markers recorded what they were done for
    assert [c[0] for c in stages_3_4("--seconds", "3")[0]] == ["eval"]


def _conditioned_train(repo, work, steps):
    before = len(_calls(repo))
    out = _conditioned(repo, work, "--stage", "2", "--stop-stage", "2", "--steps", str(steps))
    assert out.returncode == 0, out.stderr
    trained = [c[c.index("--max-steps") + 1] for c in _calls(repo)[before:] if c[0] == "train"]
    return trained, out.stdout.splitlines()


def test_conditioned_training_trains_on_when_asked_for_more_steps(repo, tmp_path):
    work = tmp_path / "work"
    assert _conditioned_train(repo, work, 5)[0] == ["5"]
    assert (work / ".done" / "2").read_text() == "5 model=wavenet-tiny\n"
    trained, lines = _conditioned_train(repo, work, 5)
    assert trained == [] and lines == [f"== stage 2: train a conditioned wavenet-tiny for 5 steps in {work}/run "
                                       "(trained to step 5 before, skipped; a larger --steps trains on)"]
    assert _conditioned_train(repo, work, 3)[0] == []
    trained, lines = _conditioned_train(repo, work, 10)
    assert trained == ["10"]
    assert lines == [f"== stage 2: train a conditioned wavenet-tiny for 10 steps in {work}/run "
                     f"(trained to step 5 before: training on)"]
    assert (work / ".done" / "2").read_text() == "10 model=wavenet-tiny\n"

    (work / ".done" / "2").write_text("")  # a marker written before markers recorded steps: resumed
    assert _conditioned_train(repo, work, 10)[0] == ["10"]
    assert _conditioned_train(repo, work, 10)[0] == []


def test_conditioned_training_with_another_model_or_settings_is_not_skipped(repo, tmp_path):
    """The marker recorded the steps alone: a rerun with another --model (or --set) said "trained to step 5 before,
    skipped" and rendered and evaluated the run's older model as if it were the one asked for. It runs wavegen
    train again, whose refusal (a run begun with other settings) stops the recipe, the marker kept as it was."""
    work = tmp_path / "work"
    assert _conditioned_train(repo, work, 5)[0] == ["5"]
    out = _conditioned(repo, work, "--stage", "2", "--stop-stage", "2", "--steps", "5", "--model", "samplernn-tiny",
                       FAKE_WAVEGEN_FAIL="train")
    assert out.returncode == 2 and "error: train failed" in out.stderr  # wavegen train's refusal, stopping the recipe
    assert "(trained to step 5 before with other settings: wavegen train resumes the run, or names what differs)" \
        in out.stdout and "skipped" not in out.stdout
    assert _calls(repo)[-1][_calls(repo)[-1].index("--model") + 1] == "samplernn-tiny"
    assert (work / ".done" / "2").read_text() == "5 model=wavenet-tiny\n"
    before = len(_calls(repo))
    out = _conditioned(repo, work, "--stage", "2", "--stop-stage", "2", "--steps", "5", "--set", "model.layers=3")
    assert out.returncode == 0 and len(_calls(repo)) == before + 1  # another --set: trained again
    assert (work / ".done" / "2").read_text() == "5 model=wavenet-tiny --set model.layers=3\n"
    assert _conditioned(repo, work, "--stage", "2", "--stop-stage", "2", "--steps", "5", "--set",
                        "model.layers=3").returncode == 0
    assert len(_calls(repo)) == before + 1  # the same settings: skipped


def test_conditioned_training_with_a_marker_of_a_count_alone_trains_again(repo, tmp_path):
    """An older recipe's training marker held the count alone, and was trusted: a rerun with another --model said
    "trained to step 5 before, skipped" and the stages after it took the run's model for the one asked for. Such
    a marker says nothing of what trained: wavegen train runs (resuming the run, or naming what differs), said
    once, and the marker then records the settings (the next rerun is skipped)."""
    work = tmp_path / "work"
    (work / ".done").mkdir(parents=True)
    (work / ".done" / "2").write_text("5\n")
    out = _conditioned(repo, work, "--stage", "2", "--stop-stage", "2", "--steps", "5", "--model", "samplernn-tiny",
                       FAKE_WAVEGEN_FAIL="train")  # wavegen train refuses a run begun with other settings
    assert out.returncode == 2 and [c[0] for c in _calls(repo)] == ["train"]
    assert out.stdout.splitlines() == [
        f"== stage 2: train a conditioned samplernn-tiny for 5 steps in {work}/run (trained to step 5 before, but "
        "its marker, an older recipe's, does not say with which settings: wavegen train resumes the run, or names "
        "what differs)"]
    assert (work / ".done" / "2").read_text() == "5\n"  # kept as it was: the training did not take
    trained, lines = _conditioned_train(repo, work, 5)  # the settings it trained with: resumed, ends at once
    assert trained == ["5"] and "does not say with which settings" in lines[0]
    assert (work / ".done" / "2").read_text() == "5 model=wavenet-tiny\n"
    trained, lines = _conditioned_train(repo, work, 5)
    assert trained == [] and lines[0].endswith("(trained to step 5 before, skipped; a larger --steps trains on)")


def test_conditioned_stage_4_interrupted_leaves_no_partial_result_and_an_older_part_goes(repo, tmp_path):
    """Stage 4 wrote wavegen eval's output to eval_test.json.part, renamed once whole: a Ctrl-C during the eval
    (bash and wavegen both get it, from the terminal) stopped the recipe before its clean-up, the .part left
    behind, and a rerun that did not run stage 4 left it too. wavegen eval writes eval_test.json itself
    (atomically), and a .part of an older recipe is removed by any run."""
    import signal
    import time

    work = tmp_path / "work"
    started = tmp_path / "eval-started"
    proc = subprocess.Popen(["bash", str(repo / "recipes" / "conditioned" / "run.sh"), "--work", str(work),
                             "--input", str(repo.parent / "input"), "--stage", "4", "--stop-stage", "4"],
                            cwd=repo.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(repo, FAKE_WAVEGEN_EVAL_STARTED=str(started)), start_new_session=True)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert started.exists(), proc.communicate()
    time.sleep(0.3)  # the stand-in's python is past its start-up: its KeyboardInterrupt ends it by SIGINT
    os.killpg(proc.pid, signal.SIGINT)  # a Ctrl-C: to the terminal's whole process group
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert sorted(p.name for p in work.iterdir()) == [".done"] and not any((work / ".done").iterdir())

    (work / "eval_test.json.part").write_text('{"nll_bits')  # an older recipe's, cut by a Ctrl-C
    (work / ".done" / "4").write_text("\n")
    out = _conditioned(repo, work, "--stage", "3", "--stop-stage", "3", "--seconds", "1",
                       FAKE_WAVEGEN_FAIL="render")  # a rerun whose stage fails: the .part goes all the same
    assert not (work / "eval_test.json.part").exists()
    (work / "eval_test.json.part").write_text('{"nll_bits')
    out = _conditioned(repo, work, "--stage", "4", "--stop-stage", "4")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in work.iterdir()) == [".done", "eval_test.json"]
    assert json.loads((work / "eval_test.json").read_text())["samples"] == 100


def test_conditioned_markers_of_the_recipes_own_older_layout_are_kept(repo, tmp_path):
    """The recipe kept WORK/.stageN.done beside stages.sh's WORK/.done/N (its own should_run and
    should_run_for); it now uses stages.sh's run_stage, run_training and run_for_record, and an older
    folder's markers move to the new place: nothing finished is redone, but for its training, whose marker
    (a count alone) does not say what trained: wavegen train runs (and resumes the run, ending at once)."""
    import hashlib

    work = tmp_path / "work"
    _corpus(work, ["bass", "bells"])
    weights = work / "run" / "best" / "model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"trained 5 steps")
    sha = hashlib.sha256(b"trained 5 steps").hexdigest()
    (work / ".stage1.done").write_text("\n")
    (work / ".stage2.done").write_text("5\n")
    (work / ".stage3.done").write_text(f"model {sha} seconds=2\n")
    (work / ".stage4.done").write_text(f"model {sha} eval-seconds=120\n")
    out = _conditioned(repo, work, "--stage", "1", "--steps", "5", "--seconds", "2")
    assert out.returncode == 0, out.stderr
    # its prep marker (empty) does not say what the corpus was made from: prepared again (prep keeps a corpus of
    # the same inputs), as its training is
    assert [c[0] for c in _calls(repo)] == ["prep", "train"] and out.stdout.count("before, skipped;") == 2, \
        out.stdout
    assert sorted(p.name for p in (work / ".done").iterdir()) == ["1", "2", "3", "4"]
    (repo.parent / "wavegen.log").unlink()
    assert not list(work.glob(".stage*.done"))
    out = _conditioned(repo, work, "--stage", "3", "--stop-stage", "3", "--seconds", "3")  # other settings: again
    assert [c[0] for c in _calls(repo)] == ["render"] * 3 and all(c[-1] == "--restart" for c in _calls(repo))


def test_conditioned_corpus_is_prepared_again_for_another_input_or_sample_rate(repo, tmp_path):
    """Stages 0 and 1 were marked done by name alone: a rerun with another --sample-rate or --input said "prepare
    the labelled corpus ... from NEW (done before, skipped)", the corpus (and the demo's recordings) left as the
    older options made them, and every stage after went on with it. Their markers now record those options."""
    work = tmp_path / "work"

    def stages_0_1(*args):
        before = len(_calls(repo))
        out = _recipe(repo, "conditioned", "--work", str(work), "--stage", "0", "--stop-stage", "1", *args)
        assert out.returncode == 0, out.stderr
        return [(c[0], c[c.index("--sample-rate") + 1]) if c[0] == "prep" else c[0]
                for c in _calls(repo)[before:]], out.stdout.splitlines()

    assert stages_0_1("--sample-rate", "8000")[0] == [("prep", "8000")]
    assert sf.info(str(work / "demo" / "bass" / "bass0.wav")).samplerate == 8000
    calls, lines = stages_0_1("--sample-rate", "8000")
    assert calls == [] and all("(done before, skipped;" in line for line in lines)
    calls, lines = stages_0_1("--sample-rate", "16000")
    assert calls == [("prep", "16000")]
    assert lines == [f"== stage 0: demo recordings in {work}/demo (done before for other settings: again)",
                     f"wrote 2 labels x 4 files x 20 s to {work}/demo",
                     f"== stage 1: prepare the labelled corpus {work}/corpus from {work}/demo (done before for other "
                     "settings: again)"]
    assert sf.info(str(work / "demo" / "bass" / "bass0.wav")).samplerate == 16000
    other = tmp_path / "other"
    calls, lines = stages_0_1("--sample-rate", "16000", "--input", str(other))
    assert calls == [("prep", "16000")] and lines[0].endswith("(done before for other settings: again)")
    assert _calls(repo)[-1][1] == str(other)  # prep's input


def test_conditioned_training_and_eval_run_again_on_a_corpus_prepared_again(repo, tmp_path):
    """A corpus prepared again (other recordings, another rate) left its training "trained to step 5 before,
    skipped" and its eval "done before": eval_test.json scored the older corpus, and the run, begun on it, was
    taken for one of the new. Their markers record the corpus (its manifest's content fingerprint)."""
    work = tmp_path / "work"
    _corpus(work, ["bass", "bells"])
    manifest = work / "corpus" / "manifest.json"
    manifest.write_text(json.dumps({"labels": ["bass", "bells"], "content_fingerprint": "a" * 64}))
    (work / "run" / "best").mkdir(parents=True)
    (work / "run" / "best" / "model.safetensors").write_bytes(b"trained 5 steps")

    def stages_2_4():
        before = len(_calls(repo))
        out = _conditioned(repo, work, "--stage", "2", "--steps", "5", "--seconds", "2")
        assert out.returncode == 0, out.stderr
        return [c[0] for c in _calls(repo)[before:]], out.stdout

    assert stages_2_4()[0] == ["train", "render", "render", "render", "eval"]
    assert (work / ".done" / "2").read_text() == f"5 model=wavenet-tiny corpus={'a' * 16}\n"
    assert stages_2_4()[0] == []
    manifest.write_text(json.dumps({"labels": ["bass", "bells"], "content_fingerprint": "b" * 64}))
    calls, stdout = stages_2_4()
    assert calls == ["train", "eval"]  # the model (the same weights here) renders the same: stage 3 skipped
    assert "(trained to step 5 before with other settings: wavegen train resumes the run, or names what differs)" \
        in stdout
    assert (work / ".done" / "4").read_text().endswith(f" eval-seconds=120 corpus={'b' * 16}\n")


# --- recipes/bench/run.sh --------------------------------------------------------------------------

def test_the_bench_recipe_quick_writes_where_out_says_and_never_into_docs(repo, tmp_path):
    """The suite had no size option and wrote only docs/bench and docs/BENCHMARKS.md: a check that it runs cost
    ~10 minutes and the docs' numbers. --quick (a sixteenth of the samples, batches 1 and 8, one run) needs
    --out DIR (relative: from where the recipe is started), and every file goes there."""
    out = _recipe(repo, "bench", "--quick")
    assert out.returncode == 2 and out.stderr.strip() == "--quick: its numbers are not the docs'; give --out DIR for them"
    assert _calls(repo) == [] and not (repo / "docs").exists()

    out = _recipe(repo, "bench", "--quick", "--out", "quick", "--stop-stage", "2")
    assert out.returncode == 0, out.stderr
    speed, profile = _calls(repo)[0], _calls(repo)[3]
    where = repo.parent / "quick" / "bench"
    assert speed[:3] == ["bench", "--model", "wavenet-medium"]
    assert {speed[i]: speed[i + 1] for i in range(3, len(speed) - 1, 2)} == {
        "--backends": "torch,numba,numba-fp16", "--batch": "1,8", "--samples": "1000", "--torch-samples": "64",
        "--repeats": "1", "--json": f"{where}/wavenet-medium.json"}
    assert profile[:3] == ["bench", "--profile", "--model"] and profile[profile.index("--samples") + 1] == "1000"
    assert len(_calls(repo)) == 6 and sorted(p.name for p in (where / ".done").iterdir()) == [
        "profile-samplernn-deepsound", "profile-wavenet-medium", "profile-wavenet-vincent",
        "speed-samplernn-deepsound", "speed-wavenet-medium", "speed-wavenet-vincent"]
    assert not (repo / "docs").exists()


def test_the_bench_recipe_measures_again_with_other_sizes_not_after_the_same(repo):
    """A step's marker was a bare file: the full suite into a folder a --quick one had filled skipped every step
    and reported the quick numbers as its own (so did one with another --threads). The marker records the
    sizes: other sizes measure again, the same ones are skipped."""
    def speed_calls(*args):
        log = repo.parent / "wavegen.log"
        log.unlink(missing_ok=True)
        out = _recipe(repo, "bench", "--out", "here", "--stop-stage", "2", *args)
        assert out.returncode == 0, out.stderr
        return out, [c for c in _calls(repo) if "--profile" not in c]

    _, quick = speed_calls("--quick")
    assert len(quick) == 3 and all(c[c.index("--batch") + 1] == "1,8" for c in quick)
    out, full = speed_calls()
    assert len(full) == 3 and all(c[c.index("--batch") + 1] == "1,8,64" and c[c.index("--repeats") + 1] == "3"
                                  for c in full)
    assert len(_calls(repo)) == 6  # the profiles too: their sizes changed
    assert "speed of wavenet-medium (done before for other settings: again)" in out.stdout
    out, again = speed_calls()
    assert again == [] and _calls(repo) == [] and "done before, skipped" in out.stdout
    _, threads = speed_calls("--threads", "1")
    assert len(threads) == 3 and all(c[c.index("--threads") + 1] == "1" for c in threads)
    assert len(_calls(repo)) == 3  # the profiles run on one thread whatever --threads says: not again


# --- recipes/stream/run.sh -------------------------------------------------------------------------

def test_the_stream_recipe_prints_its_header_for_help(repo):
    for flag in ("--help", "-h"):
        out = _recipe(repo, "stream", flag)
        assert out.returncode == 0 and out.stderr == "", out.stderr
        assert out.stdout.startswith("# A model as an endless live stream") and "--archive ARCHIVE_DIR" in out.stdout
        assert "set -euo" not in out.stdout
    out = _recipe(repo, "stream", "--bogus")
    assert out.returncode == 2 and out.stderr == "run.sh: unknown option --bogus (see --help)\n"
    assert _calls(repo) == []


def test_the_stream_recipe_takes_relative_paths_from_the_callers_folder(repo, tmp_path):
    """It used to cd into the checkout, where --model run_lab was "no such preset" and --dir wrote."""
    caller = tmp_path / "caller"
    caller.mkdir()
    where = tmp_path / "pwd.log"
    out = subprocess.run(["bash", str(repo / "recipes" / "stream" / "run.sh"), "--dir", "sdir", "--model", "run_lab",
                          "--archive", "arch", "--stage", "4", "--", "--label", "alpha"], cwd=caller,
                         capture_output=True, text=True, env=_env(repo, FAKE_WAVEGEN_PWD=str(where)), timeout=120)
    assert out.returncode == 0, out.stderr
    assert _calls(repo) == [["serve", "run_lab", "--host", "127.0.0.1", "--port", "8000", "--seed", "0",
                             "--archive", "arch", "--label", "alpha"]]
    assert where.read_text().splitlines() == [str(caller)]
    assert (caller / "sdir" / ".done").is_dir() and not (repo / "sdir").exists()


def test_the_stream_recipe_plays_the_demos_model_as_the_demo_renders_it(repo, tmp_path):
    """Its own model (the demo's stages 1-3) with the demo's draws (temperature, pitch-sync, postfilter), the
    user's options after them (argparse: the last wins); a model of the user's with serve's defaults (above)."""
    out = _recipe(repo, "stream", "--dir", str(tmp_path / "s"), "--stage", "1", "--", "--temperature", "0.9")
    assert out.returncode == 0, out.stderr
    calls = _calls(repo)
    assert [c[0] for c in calls] == ["prep", "train", "serve"], calls
    assert calls[1][calls[1].index("--max-steps") + 1] == "3000"  # the demo's steps
    assert calls[2] == ["serve", f"{tmp_path}/s/run", "--host", "127.0.0.1", "--port", "8000", "--seed", "0",
                        "--temperature", "1.0", "--pitch-sync", "0.99", "--postfilter", "1.0", "--temperature", "0.9"]


@pytest.mark.parametrize("name", [name for name, _ in RECIPE_ARGS])
def test_every_recipe_prints_its_header_for_help_and_runs_nothing(repo, name):
    """demo, bench, longform and accelerate said "unknown argument --help" (only stream and conditioned knew it)."""
    first = (RECIPES / name / "run.sh").read_text().splitlines()[1]
    for flag in ("--help", "-h"):
        out = _recipe(repo, name, flag)
        assert out.returncode == 0 and out.stderr == "", out.stderr
        assert out.stdout.splitlines()[0] == first and "set -euo" not in out.stdout
    assert _calls(repo) == [] and not (repo / ".done").exists()


@pytest.mark.parametrize("name", ["demo", "accelerate"])
def test_a_relative_dir_is_taken_from_the_callers_folder(repo, tmp_path, name):
    """demo and accelerate cd into the checkout first, where a relative --dir (and --recordings) used to
    land; the other recipes took them from the caller's folder, as a user expects of every command."""
    caller = tmp_path / "caller"
    (caller / "music").mkdir(parents=True)
    args = ["--dir", "mine", "--stage", "1", "--stop-stage", "1"]
    if name == "accelerate":
        args += ["--recordings", "music"]
    out = subprocess.run(["bash", str(repo / "recipes" / name / "run.sh"), *args], cwd=caller,
                         capture_output=True, text=True, env=_env(repo), timeout=120)
    assert (caller / "mine" / ".done").is_dir() and not (repo / "mine").exists(), (out.stdout, out.stderr)
    if name == "accelerate":  # stage 1 is its prep: of the caller's music, into the caller's folder
        assert out.returncode == 0, out.stderr
        assert _calls(repo) == [["prep", str(caller / "music"), str(caller / "mine" / "corpus"), "--sample-rate",
                                 "16000", "--val-fraction", "0.1", "--test-fraction", "0.1"]]


# --- recipes/demo/run.sh ------------------------------------------------------------------------

def _demo_train(repo, demo, *args, **extra_env):
    before = len(_calls(repo))
    out = _recipe(repo, "demo", "--dir", str(demo), "--stage", "3", "--stop-stage", "3", *args, **extra_env)
    return out, _calls(repo)[before:]


def test_the_demo_trains_as_before_by_default(repo, tmp_path):
    demo = tmp_path / "demo"
    out, calls = _demo_train(repo, demo)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["== stage 3: train samplernn-tiny, 64 mu-law levels, for 3000 steps "
                                       "(a few minutes on a CPU)"]
    assert calls == [["train", "--data", f"{demo}/corpus", "--model", "samplernn-tiny", "--run", f"{demo}/run",
                      "--max-steps", "3000", "--threads", "1", "--set", "model.q_levels=64", "--set", "train.lr=5e-3",
                      "--set", "train.lr_schedule=cosine", "--set", "train.ema_decay=0.99"]]
    out, calls = _demo_train(repo, demo)
    assert calls == [] and out.stdout.splitlines() == [
        "== stage 3: train samplernn-tiny, 64 mu-law levels, for 3000 steps (a few minutes on a CPU) "
        "(trained to step 3000 before, skipped; a larger --steps trains on)"]


def max_steps(calls):
    return [c[c.index("--max-steps") + 1] for c in calls if c[0] == "train"]


def test_the_demo_trains_on_when_asked_for_more_steps(repo, tmp_path):
    demo = tmp_path / "demo"
    assert max_steps(_demo_train(repo, demo, "--steps", "5")[1]) == ["5"]
    assert max_steps(_demo_train(repo, demo, "--steps", "5")[1]) == []
    assert max_steps(_demo_train(repo, demo, "--steps", "10")[1]) == ["10"]
    assert max_steps(_demo_train(repo, demo, "--steps", "7")[1]) == []
    out, calls = _demo_train(repo, demo, "--steps", "20", FAKE_WAVEGEN_FAIL="train")
    assert out.returncode == 2 and max_steps(calls) == ["20"]
    assert (demo / ".done" / "3").read_text() == "10\n"  # the failed training did not move the marker


def test_the_demo_renders_and_judges_again_for_a_model_trained_on(repo, tmp_path):
    """After a rerun with more --steps trained on, stages 4-6 said "done before" of the older model's
    renders and scores."""
    demo = tmp_path / "demo"
    weights = demo / "run" / "best" / "model.safetensors"
    weights.parent.mkdir(parents=True)

    def later_stages():
        before = len(_calls(repo))
        out = _recipe(repo, "demo", "--dir", str(demo), "--stage", "4")
        assert out.returncode == 0, out.stderr
        return out.stdout, [(c[0], "--restart" in c) for c in _calls(repo)[before:]]

    weights.write_bytes(b"the model after 1000 steps")
    assert later_stages()[1] == [("render", False), ("eval", False), ("eval", False)]
    # the settings docs/DEMO.md chose by measurement
    assert _calls(repo)[-3] == ["render", f"{demo}/run", "--seconds", "10", "--streams", "3", "--out",
                                f"{demo}/renders", "--seed", "1", "--temperature", "1.0", "--pitch-sync", "0.99",
                                "--postfilter", "1.0"]
    stdout, calls = later_stages()
    assert calls == [] and stdout.count("(done before, skipped; to redo it, delete ") == 3
    weights.write_bytes(b"the model after 2000 steps")  # trained on
    stdout, calls = later_stages()
    assert calls == [("render", True), ("eval", False), ("eval", False)]
    assert stdout.count("(done before for an older model: again)") == 3
    assert later_stages()[1] == []


@pytest.mark.parametrize("model, family_sets", [("wavenet-tiny", []),
                                                ("samplernn-tiny", ["--set", "train.silence_start=1"]),
                                                ("dadabots", ["--set", "train.silence_start=1"])])
def test_conditioned_training_starts_a_samplernn_s_chunks_after_silence(repo, tmp_path, model, family_sets):
    """A SampleRNN renders its label from silence reliably only when trained so (README: conditioning);
    the user's own --set comes after, so it can say otherwise."""
    out = _conditioned(repo, tmp_path / "work", "--stage", "2", "--stop-stage", "2", "--steps", "5", "--model", model,
                       "--set", "train.lr=1e-3")
    assert out.returncode == 0, out.stderr
    [train] = [c for c in _calls(repo) if c[0] == "train"]
    assert train[train.index("--max-steps") + 2:] == family_sets + ["--set", "train.lr=1e-3"]
