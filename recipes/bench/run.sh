#!/usr/bin/env bash
# Generation-speed suite → docs/BENCHMARKS.md: the models issue 4 names, torch / numba / numba
# with fp16 weights, batches 1, 8, 64; a profile of where the time goes; a plot.
#
#   bash recipes/bench/run.sh [--stage N] [--stop-stage M] [--threads K] [--fresh] [--out DIR] [--quick]
#
#   stage 1  speed of each model       → docs/bench/<model>.json      (wavegen bench)
#   stage 2  profile at batch 1 and 8  → docs/bench/profile-<model>.json (wavegen bench --profile)
#   stage 3  report                    → docs/BENCHMARKS.md (its generated part), docs/bench/generation.png
#
# Finished steps leave markers in docs/bench/.done/ and are skipped when rerun with the same sizes
# (a marker records them: after --quick, the full suite measures again); --fresh removes them.
# --threads K sets numba's and torch's threads (default: theirs, all cores).
# --out DIR writes DIR/bench/ and DIR/BENCHMARKS.md instead of docs/ (a relative DIR is taken
# from where the recipe is started). --quick checks that the suite runs, in a minute or two:
# a sixteenth of the samples, batches 1 and 8, one timed run each; its numbers are not the
# docs', so it needs --out.
# Run it on a quiet machine: anything else on the cores changes every number.
set -euo pipefail
started=$PWD
cd "$(dirname "$0")/../.."

stages_options=1 source recipes/stages.sh  # need_value for the options (sourced again after them)
stage=1; stop_stage=3; threads=""; fresh=0; docs=docs; quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) need_value "$@"; stage=$2; shift 2 ;;
    --stop-stage) need_value "$@"; stop_stage=$2; shift 2 ;;
    --threads) need_value "$@"; threads=$2; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --out) need_value "$@"; docs=$(from_caller "$2"); shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) recipe_help ;;  # the header above
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$quick" = 1 ] && [ "$docs" = docs ]; then
  echo "--quick: its numbers are not the docs'; give --out DIR for them" >&2; exit 2
fi
out=$docs/bench dir=$docs/bench
source recipes/stages.sh  # checks --stage and --stop-stage before --fresh removes anything
if [ "$fresh" = 1 ]; then rm -rf "$out/.done"; mkdir -p "$out/.done"; fi
thread_opt=()
[ -n "$threads" ] && thread_opt=(--threads "$threads")

# model: timed samples per stream for the numba rows, and for the (slow) torch rows
suite=(
  "wavenet-medium 16000 1024"
  "wavenet-vincent 8000 512"
  "samplernn-deepsound 2048 256"
)
batches=1,8,64 repeats=3 share=1
if [ "$quick" = 1 ]; then batches=1,8 repeats=1 share=16; fi
# a step's marker records the sizes its numbers were measured with: a suite run with others (--quick, --threads)
# measures again instead of reporting the other suite's numbers as its own
for entry in "${suite[@]}"; do
  read -r model samples torch_samples <<< "$entry"
  sizes=(--batch "$batches" --samples $((samples / share)) --torch-samples $((torch_samples / share))
         --repeats "$repeats" ${thread_opt[@]+"${thread_opt[@]}"})
  run_step_for_record 1 "speed-$model" "sizes ${sizes[*]}" "speed of $model" wavegen bench --model "$model" \
    --backends torch,numba,numba-fp16 "${sizes[@]}" --json "$out/$model.json"
done
for entry in "${suite[@]}"; do
  read -r model samples _ <<< "$entry"
  sizes=(--batch 1,8 --samples $((samples / share)))
  run_step_for_record 2 "profile-$model" "sizes ${sizes[*]}" "profile of $model" wavegen bench --profile \
    --model "$model" --backends numba,numba-fp16 "${sizes[@]}" --json "$out/profile-$model.json"
done
if in_stage_range 3; then  # always rewritten: cheap, and follows the JSON
  echo "== report"
  "${PYTHON:-python3}" recipes/bench/report.py "$out" "$docs/BENCHMARKS.md"
fi
