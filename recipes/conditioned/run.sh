#!/usr/bin/env bash
# One model, several artists or albums: train a conditioned model and render each label on request.
#
#   recipes/conditioned/run.sh [--input DIR] [--work DIR] [--model PRESET] [--steps N]
#                              [--seconds S] [--eval-seconds S] [--sample-rate HZ]
#                              [--set KEY=VALUE ...]
#                              [--stage N] [--stop-stage N]
#
# --input holds one subfolder per label (an artist, an album), audio files anywhere below it:
#     DIR/artist_a/*.flac   DIR/artist_b/album/*.wav   ...
# Without --input, stage 0 writes a tiny two-label demo corpus ("bass" and "bells") itself.
# Defaults: --work exp/conditioned (paths are taken from the folder you run it in), --model wavenet-tiny,
# --steps 300, --seconds 5 (per label), --eval-seconds 120, --sample-rate 16000 (a value that is not a
# number, or not above 0, is one line, exit code 2, before any stage runs). WAVEGEN=CMD runs
# another wavegen (default: python3 -m wavegen; PYTHON=/path/to/python for another interpreter).
#
# Stages (recipes/stages.sh: each leaves WORK/.done/N; a finished stage is skipped, delete the marker
# to redo it; a stage that fails leaves no marker). --stage and --stop-stage take stage numbers (else exit 2).
#   0  demo recordings (only without --input)
#   1  wavegen prep --labels folders: splits by source file, every label kept in train
#   2  wavegen train: the labels travel in the model's config (rerun resumes an unfinished run;
#      the marker records --steps, --model and --set: a rerun with a larger --steps trains on, one with
#      another --model or --set runs wavegen train, which refuses a run begun with other settings; so does a
#      marker of an older version of this recipe, which recorded the count alone)
#   3  wavegen render: each label of the corpus, and an even blend of the first two (fails,
#      naming the corpus, when there is no corpus or it has no labels)
#   4  wavegen eval: NLL per label on the test split → WORK/eval_test.json (written whole or not at all)
# Stages 3 and 4 are done for a model and their settings: their markers record the sha256 of the
# run's best weights and --seconds (--eval-seconds) (stages.sh's run_for_record), and they run again
# when either changed (the model trained on, say); stage 3 then renders over the older model's
# renders (--restart). Stages 0 and 1 record --sample-rate (and stage 1 --input), stages 2 and 4 the
# corpus they were done on (its manifest's content fingerprint): a rerun with another --input or
# --sample-rate prepares the corpus again, and trains (wavegen train refuses a run begun on another
# corpus) and evaluates on the new one, instead of "done before" for the older corpus.
set -euo pipefail

input=""
work=exp/conditioned
model=wavenet-tiny        # any preset: samplernn-tiny, wavenet-medium (GPU), dadabots (GPU) ...
steps=300                 # the demo learns its two labels in a few minutes on 2 CPU cores
seconds=5                 # rendered per label
eval_seconds=120          # test audio evaluated (spread over the whole split)
sample_rate=16000
stage=0
stop_stage=100
sets=()
wavegen=${WAVEGEN:-${PYTHON:-python3} -m wavegen}

stages_options=1 source "$(dirname "${BASH_SOURCE[0]}")/../stages.sh"  # need_value for the options (sourced again after them)
while [ $# -gt 0 ]; do
  case "$1" in
    --input) need_value "$@"; input=$2; shift 2 ;;
    --work) need_value "$@"; work=$2; shift 2 ;;
    --model) need_value "$@"; model=$2; shift 2 ;;
    --steps) need_value "$@"; steps=$2; shift 2 ;;
    --seconds) need_value "$@"; seconds=$2; shift 2 ;;
    --eval-seconds) need_value "$@"; eval_seconds=$2; shift 2 ;;
    --sample-rate) need_value "$@"; sample_rate=$2; shift 2 ;;
    --set) need_value "$@"; sets+=(--set "$2"); shift 2 ;;
    --stage) need_value "$@"; stage=$2; shift 2 ;;
    --stop-stage) need_value "$@"; stop_stage=$2; shift 2 ;;
    -h|--help) recipe_help ;;  # the header above
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

# the numbers and the stage range are checked before anything runs or is written (exit 2 naming the value):
# a --seconds no render takes failed only at stage 3, after the training
need_count --steps "$steps"
need_positive --seconds "$seconds" seconds
need_positive --eval-seconds "$eval_seconds" seconds
need_count --sample-rate "$sample_rate"
dir=$work
source "$(dirname "${BASH_SOURCE[0]}")/../stages.sh"
for marker in "$work"/.stage[0-9]*.done; do  # an older version of this recipe kept its markers there
  n=${marker##*/.stage}; n=${n%.done}
  if [ -f "$marker" ] && [ ! -e "$dir/.done/$n" ]; then mv "$marker" "$dir/.done/$n"; fi
done
rm -f "$work/eval_test.json.part"  # an older version's stage 4 wrote there first, and a Ctrl-C could leave it
corpus=$work/corpus
run=$work/run

# the corpus's labels, one a line (names may hold spaces); without a corpus, or with no labels,
# one line naming it on stderr and exit 1
corpus_labels() {
  "${PYTHON:-python3}" - "$corpus" <<'PY'
import json, sys
from pathlib import Path

corpus = Path(sys.argv[1])
manifest = corpus / "manifest.json"
if not manifest.is_file():
    sys.exit(f"stage 3: no corpus in {corpus} (no {manifest.name}): run stage 1 first")
try:
    labels = json.loads(manifest.read_text(encoding="utf-8")).get("labels") or []
except (OSError, ValueError, AttributeError) as err:
    sys.exit(f"stage 3: cannot read the labels of {manifest}: {err}")
if not labels:
    sys.exit(f"stage 3: the corpus {corpus} has no labels: prepare it from one subfolder per label "
             f"(stage 1, wavegen prep --labels folders)")
print("\n".join(labels))
PY
}

# "corpus=ID" for the corpus prepared in $corpus (ID: the first 16 hex digits of its manifest's content
# fingerprint, the same for every prep of the same recordings with the same settings); empty without one
corpus_record() {
  "${PYTHON:-python3}" - "$corpus" <<'PY'
import json, sys
from pathlib import Path

try:
    fingerprint = json.loads((Path(sys.argv[1]) / "manifest.json").read_text(encoding="utf-8"))["content_fingerprint"]
except (OSError, ValueError, KeyError, TypeError):
    sys.exit(0)
if isinstance(fingerprint, str) and fingerprint:
    print(f"corpus={fingerprint[:16]}")
PY
}

demo_recordings() {
  "${PYTHON:-python3}" - "$input" "$sample_rate" <<'PY'
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

out, sr = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)


def notes(freqs, seconds, decay):
    """Random notes from freqs, a quarter second each, with decaying envelopes."""
    note = sr // 4
    t = np.arange(note) / sr
    x = np.concatenate([np.exp(-decay * t) * np.sin(2 * np.pi * rng.choice(freqs) * t)
                        for _ in range(int(seconds * 4))])
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


for i in range(4):
    for label, freqs, decay in (("bass", [55, 65.4, 73.4, 82.4, 98], 3.0),
                                ("bells", [1318.5, 1568, 1760, 2093], 9.0)):
        (out / label).mkdir(parents=True, exist_ok=True)
        sf.write(str(out / label / f"{label}{i}.wav"), notes(freqs, 20, decay), sr)
print(f"wrote 2 labels x 4 files x 20 s to {out}")
PY
}

render_labels() {  # each label of the corpus, and an even blend of the first two; again=1: over the older renders
  local label_lines labels label blend restart=()
  label_lines=$(corpus_labels) || exit 1
  mapfile -t labels <<< "$label_lines"
  echo "labels: ${labels[*]}"
  if [ "$again" = 1 ]; then restart=(--restart); fi  # the renders of the older model are replaced
  for label in "${labels[@]}"; do
    $wavegen render "$run" --seconds "$seconds" --label "$label" --out "$work/renders/$label" \
      ${restart[@]+"${restart[@]}"}
  done
  if [ "${#labels[@]}" -ge 2 ]; then
    blend="${labels[0]}:0.5,${labels[1]}:0.5"
    $wavegen render "$run" --seconds "$seconds" --label "$blend" --out "$work/renders/blend" \
      ${restart[@]+"${restart[@]}"}
  fi
}

evaluate() {  # wavegen eval writes eval_test.json atomically (a temporary file renamed into place once whole):
  # a failed or interrupted eval leaves no eval_test.json, or the earlier one whole; it prints the result too
  $wavegen eval "$run" --data "$corpus" --split test --max-seconds "$eval_seconds" --json "$work/eval_test.json"
}

if [ -z "$input" ]; then
  input=$work/demo
  run_for_record 0 "sample-rate=$sample_rate" "demo recordings in $input" demo_recordings
fi
# the markers record what the corpus was made from: another --input or --sample-rate prepares it again (prep
# replaces it, saying so), not "done before, skipped" with the older corpus
run_for_record 1 "input=$input sample-rate=$sample_rate" "prepare the labelled corpus $corpus from $input" \
  $wavegen prep "$input" "$corpus" --labels folders --sample-rate "$sample_rate"
family_sets=()  # a SampleRNN sees silence before its chunks, as its renders begin (README: conditioning)
case "$model" in samplernn*|dadabots*) family_sets=(--set train.silence_start=1) ;; esac
# the marker records the model and the settings: another --model or --set trains (wavegen train refuses a run
# begun with others, naming what differs), not "trained before, skipped" with the older model
# and the corpus: on another, wavegen train runs (and refuses the run begun on the older one)
trained_on=$(corpus_record)
run_training_for 2 "$steps" "model=$model${sets[*]+ ${sets[*]}}${trained_on:+ $trained_on}" \
  "train a conditioned $model for $steps steps in $run" \
  $wavegen train --data "$corpus" --model "$model" --run "$run" --max-steps "$steps" ${family_sets[@]+"${family_sets[@]}"} \
  ${sets[@]+"${sets[@]}"}
run_for_record 3 "$(stage_record "$run" "seconds=$seconds")" "render $seconds s of each label into $work/renders" \
  render_labels
run_for_record 4 "$(stage_record "$run" "eval-seconds=$eval_seconds" $(corpus_record))" \
  "NLL per label on the test split → $work/eval_test.json" evaluate
