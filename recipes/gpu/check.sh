#!/usr/bin/env bash
# One call on a GPU machine (issue 12): tests on the device, generation and training speed,
# a short multi-process training run. Needs python3 with torch, triton, numba, numba-cuda and
# wavegen importable (no soundfile, soxr or librosa). Every stage is time-boxed; a failing
# stage is recorded and the next one runs. Writes under OUTDIR: machine.json, stages.jsonl,
# check.json (compile check), tests.log, racecheck.log, bench_*.json, crossover_*.json (the small
# path at 1-32 streams, the large at 1-64), ncu_*.log (the persistent kernel's profile), variants_*.json
# (the persistent kernels' options), train_*.json,
# train_run.log, and summary.json / summary.md (recipes/gpu/summary.py).
#
# numba-cuda 0.30 cannot compile on numpy 2.5 (the device image of 2026-11 has numpy 2.5.2): where
# the tree holds a numpy wheel in .whl/ (docs/BENCHMARKS.md, "GPU", says how to fetch one), it is
# installed for this run only, ahead of the machine's own.
#
#   bash recipes/gpu/check.sh OUTDIR             (on the GPU: under 8 minutes, BUDGET_SECONDS=460)
#   DRY_RUN=1 bash recipes/gpu/check.sh OUTDIR   (anywhere: prints the commands, runs only the
#                                                 CPU-safe stages: machine, corpus, summary)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: check.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
dry=${DRY_RUN:-0}
budget=${BUDGET_SECONDS:-460}  # the whole call stays under 8 minutes: each stage gets at most what is left
: > "$out/stages.jsonl"
unset NUMBA_ENABLE_CUDASIM TRITON_INTERPRET
# scripts run by path (racecheck_case.py) import wavegen from this tree too
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$dry" != 1 ] && compgen -G ".whl/numpy-*.whl" >/dev/null; then
  site=$(mktemp -d)
  "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/numpy-*.whl &&
    export PYTHONPATH="$site:$PYTHONPATH" && echo "numpy from .whl: $("$py" -c 'import numpy; print(numpy.__version__)')"
fi

# wavegen importable from THIS tree: the GPU machine gets a copy of the tree, not an install, and
# `python -m` finds ./wavegen first, whose wavegen.kernels setup.py maps to kernels/: link it
# there for this run (removed at exit; never in a dry run, which leaves the tree alone)
if [ "$dry" != 1 ] && [ ! -e wavegen/kernels ] && ! "$py" -c "import wavegen.kernels.cuda" 2>/dev/null; then
  ln -s ../kernels wavegen/kernels
  trap 'rm -f wavegen/kernels' EXIT
fi

# stage NAME SECONDS CPU_SAFE COMMAND...: run with a time limit (no more than what is left of the
# budget; skipped under 15 s), log to OUTDIR/NAME.log, record status and time
stage() {
  local name=$1 limit=$2 cpu_safe=$3; shift 3
  echo "== $name: $*"
  if [ "$dry" = 1 ] && [ "$cpu_safe" != 1 ]; then
    printf '{"stage": "%s", "status": "dry-run", "seconds": 0}\n' "$name" >> "$out/stages.jsonl"
    return 0
  fi
  local left=$((budget - SECONDS))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    printf '{"stage": "%s", "status": "skipped: out of time", "seconds": 0}\n' "$name" >> "$out/stages.jsonl"
    return 0
  fi
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  tail -n 5 "$out/$name.log"
  printf '{"stage": "%s", "status": %d, "seconds": %d}\n' "$name" "$rc" $((SECONDS - start)) >> "$out/stages.jsonl"
}

stage machine 30 1 "$py" -c "
import json, platform, subprocess, torch
info = {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda,
        'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
try:
    info['driver'] = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
                                    capture_output=True, text=True).stdout.strip()
except OSError:
    info['driver'] = None
for name in ('numpy', 'triton', 'numba', 'numba_cuda'):
    try:
        info[name] = __import__(name).__version__
    except Exception as err:
        info[name] = f'missing ({err})'
json.dump(info, open('$out/machine.json', 'w'), indent=1)
print(info)"

# 1. the cudasim tests on the device itself (kernels on the GPU, not simulated), and the gpu tests;
# only the files that have such tests (others may import soundfile, absent there)
tests=$(grep -l -E "mark\.(gpu|cudasim)" tests/test_*.py | tr '\n' ' ')
stage tests 120 0 "$py" -m pytest -q -m "gpu or cudasim" $tests -p no:cacheprovider
# 2. generation speed: cuda (fp32, bf16) against torch, at 1, 16, 256 and 4096 streams; torch in a
# run of its own, so that a failing backend keeps the other's rows (summary.py puts them side by side)
for model in wavenet-medium samplernn-3tier; do
  stage "bench_${model}__cuda" 90 0 "$py" -m wavegen bench --model "$model" --device cuda \
    --backends cuda,cuda-bf16 --batch 1,16,256,4096 --samples 1024 --repeats 2 --json "$out/bench_${model}__cuda.json"
  stage "bench_${model}__torch" 45 0 "$py" -m wavegen bench --model "$model" --device cuda \
    --backends torch --batch 1,16,256,4096 --samples 32 --repeats 1 --json "$out/bench_${model}__torch.json"
done
# 3. training speed
stage train_samplernn-3tier 40 0 "$py" -m wavegen bench --train --model samplernn-3tier --batch 128 --seq-len 512 \
  --device cuda --steps 5 --json "$out/train_samplernn-3tier.json"
# the same with an average of the weights (train.ema_decay) updated after every step: its cost per step
stage train_samplernn-3tier_ema 40 0 "$py" -m wavegen bench --train --model samplernn-3tier --batch 128 --seq-len 512 \
  --device cuda --steps 5 --set train.ema_decay=0.99 --json "$out/train_samplernn-3tier_ema.json"
stage train_wavenet-medium 40 0 "$py" -m wavegen bench --train --model wavenet-medium --device cuda --steps 5 \
  --json "$out/train_wavenet-medium.json"
# 4. 20 steps of a real training run through accelerate, on a corpus written without soundfile
stage corpus 20 1 "$py" recipes/gpu/make_corpus.py "$out/corpus" --seconds 20
stage train_run 60 0 "$py" -m accelerate.commands.launch --config_file recipes/accelerate/one_gpu.yaml \
  -m wavegen train --data "$out/corpus" --model samplernn-tiny --run "$out/run" --max-steps 20 \
  --set train.val_seconds=2
# 5. races in the persistent kernel, on one small case
if command -v compute-sanitizer >/dev/null || [ "$dry" = 1 ]; then
  stage racecheck 40 0 compute-sanitizer --tool racecheck --print-limit 20 "$py" recipes/gpu/racecheck_case.py
fi
# 6. where the small (persistent) path gives way to the large (tensor-core) path
# (generate.CUDA_LARGE_BATCH_FROM): each path in a run of its own (a configuration that does not
# fit stops its run; the other path's rows stay), 128 samples per stream after the warm-up
for model in samplernn-3tier wavenet-medium; do
  stage "crossover_${model}__small" 30 0 "$py" -m wavegen bench --model "$model" --device cuda \
    --backends cuda:path=small --batch 1,4,16,32 --samples 128 --repeats 1 --json "$out/crossover_${model}__small.json"
  stage "crossover_${model}__large" 30 0 "$py" -m wavegen bench --model "$model" --device cuda \
    --backends cuda:path=large,cuda-bf16:path=large --batch 1,4,16,64 --samples 128 --repeats 1 \
    --json "$out/crossover_${model}__large.json"
done
# 7. where a persistent kernel's time goes at one stream and at 16: ncu on the measured call's launch
# (the warm-up call's is skipped): throughput against the chip's peaks, warp stalls, occupancy,
# shared-memory bank conflicts and the instructions the warps stall on most
if command -v ncu >/dev/null || [ "$dry" = 1 ]; then
  for streams in 1 16; do
    stage "ncu_samplernn_x${streams}" 40 0 ncu --launch-skip 1 --launch-count 1 -k regex:persistent \
      --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats \
      --section MemoryWorkloadAnalysis_Tables --section SchedulerStats --section SourceCounters \
      "$py" recipes/gpu/profile_case.py samplernn-3tier cuda:path=small "$streams" 64
  done
fi
# 8. variants of the persistent kernels: SampleRNN at one stream with fewer blocks (a grid barrier
# among fewer blocks against more of each block's weights read from L2; the default is one block
# per SM); WaveNet with two layers a block (half the hand-offs on the layer chain) against one
stage variants_samplernn-3tier 30 0 "$py" -m wavegen bench --model samplernn-3tier --device cuda \
  --backends cuda:path=small:blocks=16,cuda:path=small:blocks=33,cuda:path=small:blocks=66,cuda:path=small \
  --batch 1 --samples 256 --repeats 1 --json "$out/variants_samplernn-3tier.json"
stage variants_wavenet-medium 30 0 "$py" -m wavegen bench --model wavenet-medium --device cuda \
  --backends cuda:path=small,cuda:path=small:layers_per_block=2 \
  --batch 1,16 --samples 256 --repeats 1 --json "$out/variants_wavenet-medium.json"
# 9. with what is left: the kernels as the device's compiler builds them (rows written as they finish)
stage check 90 0 "$py" -m wavegen.kernels.cuda --check --arch 90 --json "$out/check.json"
"$py" recipes/gpu/summary.py "$out"
