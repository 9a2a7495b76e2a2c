#!/usr/bin/env bash
# Long-form rendering: an hour (or any length) of audio per stream from a trained model,
# resumable at any point, with the speed (x real time) and the peak memory at the end.
#
#   bash recipes/longform/run.sh MODEL [--hours H | --seconds S] [--streams N] [--dir OUT]
#        [--backend auto|torch|numba|cuda] [--device cpu|cuda] [--precision fp32|fp16|bf16]
#        [--format wav|flac] [--seed S] [--stage N] [--stop-stage M] [-- any other `wavegen render` option]
#
# MODEL is a run folder (its best/ is used) or a model folder, e.g. demo/run after
# recipes/demo/run.sh. --backend auto picks numba on a CPU where it is installed, cuda on a GPU.
# --precision other than fp32 is faster where the backend has it, and changes the audio.
#
# Stages (a finished render leaves OUT/.done/1 and is skipped when rerun):
#   1  render: `wavegen render` under /usr/bin/time -v. Stop it any way you like (Ctrl-C,
#      kill -9, a full disk, a reboot): rerunning the SAME command resumes from the last
#      snapshot (every 30 s of audio) and the files come out byte-identical to a render that
#      never stopped. Audio: OUT/stream_000.wav ...; a spectrogram PNG beside each. While it
#      runs it holds OUT/.lock: a second render into OUT is refused, naming this one's process.
#   2  report: duration, wall time, x real time, backend, guard events, peak memory.
set -euo pipefail
cd "$(dirname "$0")/../.."

model=""; seconds=3600; streams=1; dir=""; backend=auto; device=cpu; precision=fp32; format=wav; seed=0
stage=1; stop_stage=100; extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --hours) seconds=$(python3 -c "print(float('$2') * 3600)"); shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --streams) streams=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    --format) format=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -*) echo "unknown argument $1" >&2; exit 2 ;;
    *) model=$1; shift ;;
  esac
done
[ -n "$model" ] || { echo "usage: $0 MODEL [--hours H | --seconds S] [--streams N] [--dir OUT] ..." >&2; exit 2; }
dir=${dir:-renders/longform-$(basename "$model")}
source recipes/stages.sh

render() {
  local cmd=(wavegen render "$model" --seconds "$seconds" --streams "$streams" --out "$dir"
             --backend "$backend" --device "$device" --precision "$precision" --format "$format" --seed "$seed"
             ${extra[@]+"${extra[@]}"})
  echo "${cmd[*]}"
  # GNU time reports the peak resident memory of the whole render; without it, the report's
  # own figure (the render process, measured by Python's resource module) is used.
  if /usr/bin/time -v true >/dev/null 2>&1; then
    /usr/bin/time -v -o "$dir/.done/time.txt" "${cmd[@]}"
  else
    "${cmd[@]}"
  fi
}

report() {
  python3 - "$dir" <<'EOF'
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
r = json.loads((out / "render_report.json").read_text())
rss = r["max_rss_mb"]
time_file = out / ".done" / "time.txt"
if time_file.is_file():
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_file.read_text())
    if m:
        rss = int(m.group(1)) / 1024
print(f"rendered      {r['streams']} stream(s) x {r['seconds']:.0f} s at {r['sample_rate']} Hz ({r['backend']} backend "
      f"{r.get('precision', 'fp32')}, "
      f"{r['processes']} process(es), {r['sessions']} session(s))")
print(f"wall time     {r['wall_seconds']:.1f} s")
print(f"x real time   {r['realtime_factor']:.2f} per stream, {r['realtime_factor_all_streams']:.2f} all streams")
print(f"peak memory   {rss:.0f} MB (last session)")
print(f"guard events  {r['guard']['counts'] or 'none'}")
print(f"files         {', '.join(r['paths'])}")
EOF
}

run_stage 1 "render ${streams} stream(s) x ${seconds} s into $dir (rerun to resume)" render
if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then  # no marker: the report is shown every time
  echo "== stage 2: report"
  report
fi
