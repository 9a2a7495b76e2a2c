#!/usr/bin/env bash
# wavegen demo, end to end on a CPU: set-up, a small album the demo synthesises itself,
# prep, a few minutes of training of a tiny SampleRNN, a 10-second render, evaluation, and the
# render judged against the album (pitch, Frechet distance beside the album's and noise's).
#
#   bash recipes/demo/run.sh [--stage N] [--stop-stage M] [--dir DEMO_DIR] [--steps 3000]
#
# The settings were chosen by measurement on a 2-core CPU (docs/DEMO.md): samplernn-tiny with
# 64 mu-law levels (its 256 levels rendered noise in this budget), lr 5e-3 annealed by a cosine over
# 3000 steps on one thread (two threads were no faster per step for this model) with an average of
# the weights (train.ema_decay=0.99), rendered at temperature 1.0 (chosen on the val song) with
# pitch-synchronous draws (--pitch-sync 0.99: every render measured came nearer the album, and pitched
# on every training seed) and the pitch postfilter (--postfilter 1.0, chosen on the val song).
#
# Each finished stage leaves a marker in DEMO_DIR/.done/, so rerunning skips it (training's
# records its --steps: rerun with more and it trains on from where it stopped, then renders,
# evaluates and judges the newer model again); delete DEMO_DIR to start over. DEMO_DIR: demo/ in the
# repository's root by default; a relative one given is taken from the folder you run the recipe in.
# Listen to DEMO_DIR/renders/stream_000.wav ... stream_002.wav.
set -euo pipefail
started=$PWD
cd "$(dirname "$0")/../.."

stages_options=1 source recipes/stages.sh  # need_value for the options (sourced again after them)
stage=0; stop_stage=100; dir=demo; steps=3000
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) need_value "$@"; stage=$2; shift 2 ;;
    --stop-stage) need_value "$@"; stop_stage=$2; shift 2 ;;
    --dir) need_value "$@"; dir=$(from_caller "$2"); shift 2 ;;
    --steps) need_value "$@"; steps=$2; shift 2 ;;
    -h|--help) recipe_help ;;  # the header above
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
need_count --steps "$steps"  # before any stage: not a traceback from wavegen train after the set-up and prep
source recipes/stages.sh

# run_forwarding (stages.sh): each command a child that a SIGTERM sent to the recipe reaches (kill, a supervisor)
setup() { run_forwarding bash recipes/setup.sh; }
run_stage 0 "set-up (pinned torch, wavegen and its dependencies)" setup
run_stage 1 "synthesise a small album (8 songs x 20 s, stereo 22.05 kHz)" \
  run_forwarding "${PYTHON:-python3}" recipes/demo/make_recordings.py "$dir/recordings" --songs 8 --seconds 20
run_stage 2 "prep: mono, 16 kHz, trim silence, split by song" \
  run_forwarding wavegen prep "$dir/recordings" "$dir/corpus" --val-fraction 0.125 --test-fraction 0.125
run_training 3 "$steps" "train samplernn-tiny, 64 mu-law levels, for $steps steps (a few minutes on a CPU)" \
  run_forwarding wavegen train --data "$dir/corpus" --model samplernn-tiny --run "$dir/run" --max-steps "$steps" \
    --threads 1 --set model.q_levels=64 --set train.lr=5e-3 --set train.lr_schedule=cosine --set train.ema_decay=0.99
render() {  # again=1 (run_model_stage): the folder holds the render of the model before it trained on
  local restart=(); if [ "$again" = 1 ]; then restart=(--restart); fi
  run_forwarding wavegen render "$dir/run" --seconds 10 --streams 3 --out "$dir/renders" --seed 1 --temperature 1.0 \
    --pitch-sync 0.99 --postfilter 1.0 ${restart[@]+"${restart[@]}"}
}
run_model_stage 4 "$dir/run" "render 3 streams of 10 seconds" render
run_model_stage 5 "$dir/run" "evaluate on the test song (bits per sample; lower is better)" \
  run_forwarding wavegen eval "$dir/run" --data "$dir/corpus" --split test
run_model_stage 6 "$dir/run" "judge the render against the album (periodic fraction; Frechet distance, 0 = the test song)" \
  run_forwarding wavegen eval "$dir/run" --renders "$dir/renders" --data "$dir/corpus" --plot "$dir/compare.png"

if [ "$stop_stage" -ge 6 ]; then  # the whole demo ran (the stream recipe runs only stages 1-3)
  echo
  echo "Done. Listen to $dir/renders/stream_000.wav ... stream_002.wav (and to what training rendered: $dir/run/samples/)"
  echo "The render beside the album, feature by feature and as spectrograms: $dir/compare.png"
  echo "The model is in $dir/run/best/; training curves: tensorboard --logdir $dir/run/tb"
fi
