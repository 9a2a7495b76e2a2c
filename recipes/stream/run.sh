#!/usr/bin/env bash
# A model as an endless live stream: trains a tiny SampleRNN on the demo's synthetic album (or
# takes your model), then plays it forever with `wavegen serve` and prints the URL.
#
#   bash recipes/stream/run.sh [--model RUN_OR_MODEL] [--dir DIR] [--steps 300]
#        [--port 8000] [--host 127.0.0.1] [--seed 0] [--archive ARCHIVE_DIR]
#        [--stage N] [--stop-stage M] [-- any other `wavegen serve` option]
#
# Stages (a finished stage leaves DIR/.done/N and is skipped when rerun):
#   0  set-up (pinned torch, wavegen and its dependencies)
#   1  synthesise a small album (skipped with --model)
#   2  prep: mono, 16 kHz, split by song (skipped with --model)
#   3  train samplernn-tiny for --steps steps (skipped with --model)
#   4  serve: open the printed URL in a browser, or play URL/stream in VLC, mpv or ffplay.
#      Ctrl-C stops it; with --archive, rerunning continues the same broadcast.
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0; stop_stage=100; dir=stream; steps=300; model=""; port=8000; host=127.0.0.1; seed=0; archive=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --archive) archive=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$dir/.done"

run_stage() {  # run_stage N "title" command...
  local n=$1 title=$2; shift 2
  if [ "$n" -lt "$stage" ] || [ "$n" -gt "$stop_stage" ]; then return; fi
  if [ -f "$dir/.done/$n" ]; then echo "== stage $n: $title (done before, skipped)"; return; fi
  echo "== stage $n: $title"
  "$@"
  touch "$dir/.done/$n"
}

setup() { bash recipes/setup.sh; }
run_stage 0 "set-up (pinned torch, wavegen and its dependencies)" setup
if [ -z "$model" ]; then
  model="$dir/demo-album"
  run_stage 1 "synthesise a small album (8 songs x 20 s)" \
    python3 recipes/demo/make_recordings.py "$dir/recordings" --songs 8 --seconds 20
  run_stage 2 "prep: mono, 16 kHz, trim silence, split by song" \
    wavegen prep "$dir/recordings" "$dir/corpus" --val-fraction 0.125 --test-fraction 0.125
  run_stage 3 "train samplernn-tiny for $steps steps (a few minutes on 2 CPU cores)" \
    wavegen train --data "$dir/corpus" --model samplernn-tiny --run "$dir/demo-album" --max-steps "$steps"
fi

# Stage 4 runs until stopped, so it leaves no marker: rerunning the recipe serves again.
if [ 4 -ge "$stage" ] && [ 4 -le "$stop_stage" ]; then
  echo "== stage 4: serve $model (Ctrl-C stops)"
  cmd=(wavegen serve "$model" --host "$host" --port "$port" --seed "$seed")
  [ -n "$archive" ] && cmd+=(--archive "$archive")
  cmd+=(${extra[@]+"${extra[@]}"})
  echo "${cmd[*]}"
  # the server prints "listening: URL" once it plays; say it once more, plainly
  "${cmd[@]}" | while IFS= read -r line; do
    echo "$line"
    case "$line" in listening:*) echo "Open ${line#listening: } in a browser; the stream alone: ${line#listening: }stream" ;; esac
  done
fi
