#!/usr/bin/env bash
# Train samplernn-3tier or wavenet-medium on your recordings with accelerate: one GPU, one
# machine with N GPUs, or several machines. The same run folder resumes under any of them.
#
#   bash recipes/accelerate/run.sh --recordings ~/music/my-band [--model samplernn-3tier|wavenet-medium]
#        [--config one_gpu|one_node|multi_node|FILE.yaml] [--num-processes N (one_node: the GPUs found)]
#        [--machine-rank R --main-ip IP] [--dir exp/my-band] [--steps 100000]
#        [--stage N] [--stop-stage M] [--set KEY=VALUE ...]
#
# Defaults: --model samplernn-3tier, --config one_gpu, --dir exp/MODEL (in the repository's root),
# --steps 100000. Relative paths given (--recordings, --dir, FILE.yaml) are taken from the folder you
# run the recipe in.
#
# Stages: 0 set-up, 1 prep, 2 train, 3 evaluate, 4 render. Each finished stage leaves a marker
# in DIR/.done/, so rerunning skips it; a stopped training (Ctrl-C, SIGTERM, a lost node) is
# resumed by rerunning the same command (stage 2 is marked done only when it reaches --steps,
# and a larger --steps trains on from the last checkpoint; stages 3-4 then run again, for the newer model).
#
# Several machines: DIR must be on a filesystem every machine sees at the same path. Run
# stages 0-1 once, then stage 2 on every machine at the same time, each with its own
# --machine-rank (0 on the machine whose address is --main-ip), e.g. under SLURM:
#   bash recipes/accelerate/run.sh --config multi_node --stage 2 --stop-stage 2 \
#        --machine-rank $SLURM_NODEID --main-ip $(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) ...
# and stages 3-4 once, on one machine. Edit multi_node.yaml for num_machines / num_processes.
set -euo pipefail
started=$PWD
cd "$(dirname "$0")/../.."

stages_options=1 source recipes/stages.sh  # need_value for the options (sourced again after them)
stage=0; stop_stage=100; model=samplernn-3tier; config=one_gpu; dir=""; recordings=""; steps=100000
num_processes=""; machine_rank=""; main_ip=""; overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) need_value "$@"; stage=$2; shift 2 ;;
    --stop-stage) need_value "$@"; stop_stage=$2; shift 2 ;;
    --model) need_value "$@"; model=$2; shift 2 ;;
    --config) need_value "$@"; config=$2; shift 2 ;;
    --dir) need_value "$@"; dir=$(from_caller "$2"); shift 2 ;;
    --recordings) need_value "$@"; recordings=$(from_caller "$2"); shift 2 ;;
    --steps) need_value "$@"; steps=$2; shift 2 ;;
    --num-processes) need_value "$@"; num_processes=$2; shift 2 ;;
    --machine-rank) need_value "$@"; machine_rank=$2; shift 2 ;;
    --main-ip) need_value "$@"; main_ip=$2; shift 2 ;;
    --set) need_value "$@"; overrides+=(--set "$2"); shift 2 ;;
    -h|--help) recipe_help ;;  # the header above
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
dir=${dir:-exp/$model}
case "$config" in
  *.yaml|*.yml) config_file=$(from_caller "$config") ;;
  *) config_file=recipes/accelerate/$config.yaml ;;
esac
[ -f "$config_file" ] || { echo "no accelerate config $config_file" >&2; exit 2; }
whole_number() {  # whole_number OPTION VALUE LEAST: exit 2 unless VALUE is a whole number, at least LEAST
  case "$2" in ''|*[!0-9]*) ;; *) [ "$((10#$2))" -ge "$3" ] && return 0 ;; esac
  echo "$0: $1 takes a whole number (at least $3), not '$2'" >&2
  exit 2
}
[ -z "$num_processes" ] || { whole_number --num-processes "$num_processes" 1; num_processes=$((10#$num_processes)); }
[ -z "$machine_rank" ] || { whole_number --machine-rank "$machine_rank" 0; machine_rank=$((10#$machine_rank)); }
# what the named one-machine configs would not do as asked (accelerate runs them anyway: one process; machine 0)
if [ "$config" = one_gpu ] && [ "${num_processes:-1}" -gt 1 ]; then
  echo "$0: --config one_gpu runs one process; for $num_processes on this machine give --config one_node" \
       "--num-processes $num_processes" >&2
  exit 2
fi
if [[ "$config" = one_gpu || "$config" = one_node ]] && [ "${machine_rank:-0}" != 0 ]; then
  echo "$0: --machine-rank $machine_rank is for a training over several machines (--config multi_node or a" \
       "FILE.yaml of yours); --config $config runs on this machine alone" >&2
  exit 2
fi
source recipes/stages.sh  # checks --stage and --stop-stage (exit 2 on anything but a stage number), makes DIR/.done
main_machine=true
[ -n "$machine_rank" ] && [ "$machine_rank" != 0 ] && main_machine=false

run_stage() {  # run_stage N "title" command...: stages.sh's, but stage 2's marker names --steps and
  # only the main machine leaves markers (stages 3-4, run on the main machine alone, use run_model_stage)
  local n=$1 title=$2; shift 2
  local marker=$dir/.done/$n
  [ "$n" = 2 ] && marker=$dir/.done/2.steps$steps  # a larger --steps trains on
  in_stage_range "$n" || return 0
  if [ -f "$marker" ]; then say_skipped "$n" "$title" "${marker##*/}"; return; fi
  echo "== stage $n: $title"
  "$@"
  if $main_machine; then touch "$marker"; fi
}

prep() {
  [ -n "$recordings" ] || { echo "stage 1 needs --recordings FOLDER (or start at --stage 2 with DIR/corpus)" >&2; exit 2; }
  run_forwarding wavegen prep "$recordings" "$dir/corpus" --sample-rate 16000 --val-fraction 0.1 --test-fraction 0.1
}

train() {
  # --quiet: a failed single process (one_gpu) ends without accelerate's CalledProcessError traceback; the
  # multi-process launcher (torch.distributed's) prints its ChildFailedError report whatever it is told
  local launch=(accelerate launch --quiet --config_file "$config_file") status=0
  if [ -z "$num_processes" ] && [ "$config" = one_node ]; then  # one process per GPU found here
    num_processes=$("${PYTHON:-python3}" -c 'import torch; print(torch.cuda.device_count())')
    if [ "$num_processes" = 0 ]; then
      echo "--config one_node starts one process per GPU, and there is none here: give --num-processes N for N" \
           "CPU processes (over gloo)" >&2
      exit 2
    fi
  fi
  [ -n "$num_processes" ] && launch+=(--num_processes "$num_processes")
  [ -n "$machine_rank" ] && launch+=(--machine_rank "$machine_rank")
  [ -n "$main_ip" ] && launch+=(--main_process_ip "$main_ip")
  # ${overrides[@]+...}: an empty array under set -u on older bash
  # run_forwarding (stages.sh): a SIGTERM sent to the recipe reaches accelerate, which stops the training with it
  run_forwarding "${launch[@]}" -m wavegen train --data "$dir/corpus" --model "$model" --run "$dir/run" \
    --max-steps "$steps" ${overrides[@]+"${overrides[@]}"} || status=$?
  if [ "$status" != 0 ]; then
    echo "stage 2 ended with exit $status: the reason is wavegen's message above (an error line is a refusal to" \
         "fix; a stopped training resumes when this command is rerun); a traceback of accelerate or" \
         "torch.distributed after it only reports that exit" >&2
    exit "$status"
  fi
}

render() {  # again=1 (run_model_stage): the folder holds the render of the model before it trained on
  local restart=(); if [ "$again" = 1 ]; then restart=(--restart); fi
  run_forwarding wavegen render "$dir/run" --seconds 30 --streams 4 --out "$dir/renders" --seed 1 --device "$device" \
    ${restart[@]+"${restart[@]}"}
}

if $main_machine; then
  run_stage 0 "set-up (pinned torch, wavegen and its dependencies)" run_forwarding bash recipes/setup.sh
  run_stage 1 "prep: mono, 16 kHz, trim silence, split by recording" prep
fi
run_stage 2 "train $model to step $steps with $config_file" train
if $main_machine; then
  device=$("${PYTHON:-python3}" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
  # stages 3-4 are done FOR the model (stages.sh's run_model_stage): trained on (a larger --steps), it is
  # evaluated and rendered again. Every test segment scored whole (a recurrent model's state carried through it);
  # on the GPU where there is one
  run_model_stage 3 "$dir/run" "evaluate on the test split (bits per sample)" \
    run_forwarding wavegen eval "$dir/run" --data "$dir/corpus" --split test --device "$device"
  run_model_stage 4 "$dir/run" "render 4 streams x 30 s" render
  echo
  if [ -f "$dir/run/best/model.safetensors" ]; then
    made="Model: $dir/run/best/"
    [ -f "$dir/.done/4" ] && made="$made; renders: $dir/renders/"  # stage 4 ran (now or before)
    echo "$made; curves: tensorboard --logdir $dir/run/tb"
  else  # the stages run so far made none (say, --stop-stage 1)
    echo "No model yet in $dir/run/best/: stage 2 trains it"
  fi
fi
