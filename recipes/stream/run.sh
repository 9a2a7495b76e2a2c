#!/usr/bin/env bash
# A model as an endless live stream: trains the demo's model on its synthetic album (the demo
# recipe's stages 1-3, recipes/demo/run.sh) or takes your model, then plays it forever with
# `wavegen serve` and prints the URL.
#
#   bash recipes/stream/run.sh [--model RUN_OR_MODEL] [--dir DIR] [--steps 3000]
#        [--port 8000] [--host 127.0.0.1] [--seed 0] [--archive ARCHIVE_DIR]
#        [--stage N] [--stop-stage M] [-- any other `wavegen serve` option]
#
# Paths (--model, --dir, --archive) are taken from the folder you run it in, as wavegen takes
# them; DIR defaults to stream/ there.
#
# Stages (a finished stage leaves DIR/.done/N and is skipped when rerun):
#   0  set-up (pinned torch, wavegen and its dependencies)
#   1-3  the demo's album, prep and training, in DIR (skipped with --model)
#   4  serve: open the printed URL in a browser, or play URL/stream in VLC, mpv or ffplay.
#      Ctrl-C stops it; with --archive, rerunning continues the same broadcast. The demo's model is
#      played as the demo renders it (--temperature 1.0 --pitch-sync 0.99 --postfilter 1.0; your
#      own options after -- come later and win); --model plays with serve's defaults.
set -euo pipefail
recipes=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)  # this checkout's recipes/; no cd: paths stay the caller's

stages_options=1 source "$recipes/stages.sh"  # need_value for the options (sourced again after them)
stage=0; stop_stage=100; dir=stream; steps=3000; model=""; port=8000; host=127.0.0.1; seed=0; archive=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) need_value "$@"; model=$2; shift 2 ;;
    --dir) need_value "$@"; dir=$2; shift 2 ;;
    --steps) need_value "$@"; steps=$2; shift 2 ;;
    --port) need_value "$@"; port=$2; shift 2 ;;
    --host) need_value "$@"; host=$2; shift 2 ;;
    --seed) need_value "$@"; seed=$2; shift 2 ;;
    --archive) need_value "$@"; archive=$2; shift 2 ;;
    --stage) need_value "$@"; stage=$2; shift 2 ;;
    --stop-stage) need_value "$@"; stop_stage=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) recipe_help ;;  # the header above
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$dir" in /*) ;; *) dir=$PWD/$dir ;; esac  # the demo recipe (stages 1-3) runs in the checkout
source "$recipes/stages.sh"

setup() { run_forwarding bash "$recipes/setup.sh"; }  # stages.sh: a SIGTERM to the recipe reaches it
run_stage 0 "set-up (pinned torch, wavegen and its dependencies)" setup
draws=()  # the demo's model: its render's draws (recipes/demo/run.sh, docs/DEMO.md)
if [ -z "$model" ]; then
  model="$dir/run"
  draws=(--temperature 1.0 --pitch-sync 0.99 --postfilter 1.0)
  if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 1 ]; then  # the demo's stages keep their own markers in DIR
    run_forwarding bash "$recipes/demo/run.sh" --dir "$dir" --stage "$(( stage > 1 ? stage : 1 ))" \
      --stop-stage "$(( stop_stage < 3 ? stop_stage : 3 ))" --steps "$steps"
  fi
fi

# Stage 4 runs until stopped, so it leaves no marker: rerunning the recipe serves again.
if [ 4 -ge "$stage" ] && [ 4 -le "$stop_stage" ]; then
  echo "== stage 4: serve $model (Ctrl-C stops)"
  cmd=(wavegen serve "$model" --host "$host" --port "$port" --seed "$seed")
  [ -n "$archive" ] && cmd+=(--archive "$archive")
  cmd+=(${draws[@]+"${draws[@]}"} ${extra[@]+"${extra[@]}"})
  echo "${cmd[*]}"
  # the server prints "listening: URL" once it plays; say it once more, plainly. exec: the server takes this
  # script's process, so a SIGTERM sent to it (kill, a supervisor) stops the server, with its archive's snapshot,
  # and its exit status (130) is the recipe's (bash ended by it left the server playing, its port and archive held)
  exec "${cmd[@]}" > >(while IFS= read -r line; do
    echo "$line"
    case "$line" in listening:*) echo "Open ${line#listening: } in a browser; the stream alone: ${line#listening: }stream" ;; esac
  done)
fi
