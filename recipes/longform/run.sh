#!/usr/bin/env bash
# Long-form rendering: an hour (or any length) of audio per stream from a trained model,
# resumable at any point, with the speed (x real time) and the peak memory at the end.
#
#   bash recipes/longform/run.sh MODEL [--hours H | --seconds S] [--streams N] [--dir OUT]
#        [--backend auto|torch|numba|cuda] [--device cpu|cuda] [--precision fp32|fp16|bf16]
#        [--format wav|flac] [--seed S] [--stage N] [--stop-stage M] [-- any other `wavegen render` option]
#
# MODEL is a run folder (its best/ is used) or a model folder, e.g. demo/run after
# recipes/demo/run.sh. MODEL and OUT are taken relative to the directory the recipe is started
# from; OUT defaults to renders/longform-NAME there (NAME: MODEL's folder name). --backend auto
# picks numba (where it is installed; torch otherwise) with --device cpu, the default, and cuda with
# --device cuda: the recipe renders on the CPU unless told. --precision other than fp32 is
# faster where the backend has it, and changes the audio. A usage mistake (a missing value, an
# --hours that is not a positive number) is one line, exit code 2, before anything runs.
#
# Stages:
#   1  render: `wavegen render` under /usr/bin/time -v, every time the stage runs: it does nothing
#      when OUT holds this render complete, resumes an unfinished one, and refuses (exit 2, naming
#      both values) a request that differs from what OUT holds (other --seconds, --seed ...; add
#      `-- --restart` to discard it). Stop it any way you like (Ctrl-C, kill -9, a full disk, a
#      reboot): rerunning the SAME command resumes from the last snapshot (every 30 s of audio)
#      and the files come out byte-identical to a render that never stopped. Audio:
#      OUT/stream_000.wav ...; a spectrogram PNG beside each. While it runs it holds OUT/.lock: a
#      second render into OUT is refused, naming this one's process.
#   2  report: duration, wall time, x real time, backend, guard events, peak memory (of the last
#      session that rendered).
set -euo pipefail

usage="usage: $0 MODEL [--hours H | --seconds S] [--streams N] [--dir OUT] [--backend B] [--device D] \
[--precision P] [--format F] [--seed S] [--stage N] [--stop-stage M] [-- wavegen render options]"
die() { echo "$0: $*" >&2; exit 2; }
started=$PWD
stages_options=1 source "$(dirname "$0")/../stages.sh"  # from_caller, recipe_help, positive_number (stages checked below)

hours_seconds() {  # hours_seconds H: H hours in seconds, worked out in decimal (1.1 -> 3960.0, where a float's
  # 1.1 * 3600 is 3960.0000000000005: what the render then said and recorded), or exit 1 unless a positive number
  positive_number "$1" 3600 >/dev/null || return 1
  "${PYTHON:-python3}" -c 'import decimal, sys; print(repr(float(decimal.Decimal(sys.argv[1].strip()) * 3600)))' "$1"
}

model=""; seconds=3600; streams=1; out=""; backend=auto; device=cpu; precision=fp32; format=wav; seed=0
stage=1; stop_stage=100; extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    --hours|--seconds|--streams|--dir|--backend|--device|--precision|--format|--seed|--stage|--stop-stage)
      if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#--}" != "$2" ]; then die "$1 needs a value; $usage"; fi
      case "$1" in
        --hours) seconds=$(hours_seconds "$2") || die "--hours takes a positive number of hours, not '$2'" ;;
        --seconds) seconds=$(positive_number "$2") || die "--seconds takes a positive number of seconds, not '$2'" ;;
        --streams) streams=$2 ;;
        --dir) out=$2 ;;
        --backend) backend=$2 ;;
        --device) device=$2 ;;
        --precision) precision=$2 ;;
        --format) format=$2 ;;
        --seed) seed=$2 ;;
        --stage) stage=$2 ;;
        --stop-stage) stop_stage=$2 ;;
      esac
      shift 2 ;;
    -h|--help) recipe_help ;;  # the header above
    -*) die "unknown argument $1; $usage" ;;
    *) [ -z "$model" ] || die "one MODEL only, got '$model' and '$1'; $usage"; model=$1; shift ;;
  esac
done
[ -n "$model" ] || die "no MODEL given; $usage"
# relative to where the recipe was started, before it moves to the repository's root
model=$(from_caller "$model")
out=$(from_caller "${out:-renders/longform-$(basename "$model")}")
cd "$(dirname "$0")/../.."
unset dir
source recipes/stages.sh  # the stage range checked; no dir set: this recipe keeps no stage markers

remove_dead_leftovers() {  # remove_dead_leftovers DONE: the files a recipe killed with -9 left in DONE
  # (time.txt.new.PID, began.PID) whose process has ended; a live one's (a recipe rendering now) stay. began.PID
  # names the host its recipe runs on: another host's PID means nothing here (its recipe, rendering into a shared
  # OUT, lost its files and failed after a complete render), so those stay; an older recipe's is empty
  local file pid host here
  here=$(uname -n)
  for file in "$1"/time.txt.new.* "$1"/began.*; do
    [ -f "$file" ] || continue
    pid=${file##*.}
    case "$pid" in ''|*[!0-9]*) continue ;; esac
    host=$(cat "$1/began.$pid" 2>/dev/null) || host=""
    if [ -n "$host" ] && [ "$host" != "$here" ]; then continue; fi
    if ! kill -0 "$pid" 2>/dev/null && [ ! -d "/proc/$pid" ]; then rm -f "$file"; fi
  done
}

rendered_report() {  # rendered_report REPORT: true where REPORT is a render's own, false where it was written again
  # from the files (a top-level "rebuilt": rendered nothing) or cannot be read
  "${PYTHON:-python3}" - "$1" <<'EOF'
import json, sys
try:
    with open(sys.argv[1], encoding="utf-8") as f:
        report = json.load(f)
except (OSError, ValueError):
    sys.exit(1)
sys.exit(1 if not isinstance(report, dict) or "rebuilt" in report else 0)
EOF
}

render() {
  local cmd=(wavegen render "$model" --seconds "$seconds" --streams "$streams" --out "$out"
             --backend "$backend" --device "$device" --precision "$precision" --format "$format" --seed "$seed"
             ${extra[@]+"${extra[@]}"})
  echo "${cmd[*]}"
  # GNU time reports the peak resident memory of the whole render; without it, the report's
  # own figure (the render process, measured by Python's resource module) is used.
  # (without a folder for its file, as where --dir names a file, render says what is wrong)
  local existed=0; if [ -e "$out" ]; then existed=1; fi
  if /usr/bin/time -v true >/dev/null 2>&1 && mkdir -p "$out/.done" 2>/dev/null; then
    # this recipe's own temporary name: a second recipe into OUT, refused while this one renders, removes
    # only its own (it removed this one's, and this recipe then failed after a complete render)
    local timing="$out/.done/time.txt" new="$out/.done/time.txt.new.$$" began="$out/.done/began.$$" status=0
    remove_dead_leftovers "$out/.done"
    uname -n > "$began"  # the host this recipe runs on: its PID is judged there only
    # run_forwarding (stages.sh): a SIGTERM sent to the recipe reaches the render (not GNU time, which it ended,
    # leaving the render running), which stops with its snapshot as on Ctrl-C
    run_forwarding --wrapper /usr/bin/time -v -o "$new" "${cmd[@]}" || status=$?
    if [ "$status" != 0 ]; then  # refused before it wrote anything (a bad option, no such model): no folder left
      rm -f "$new" "$began"
      rmdir "$out/.done" 2>/dev/null || true
      if [ "$existed" = 0 ]; then rmdir "$out" 2>/dev/null || true; fi
      return "$status"
    fi
    # the timing is of the last session that rendered: one that wrote the report now. A rerun of a complete render
    # renders nothing, and one that wrote a damaged report again from the files (its "rebuilt" key) rendered nothing
    # either: the timing already kept stays
    if [ "$out/render_report.json" -nt "$began" ] && rendered_report "$out/render_report.json"; then
      mv "$new" "$timing"
    else
      rm -f "$new"
    fi
    rm -f "$began"
    return "$status"
  else
    run_forwarding "${cmd[@]}"
  fi
}

report() {
  [ -f "$out/render_report.json" ] || \
    die "stage 2: no finished render in $out (no render_report.json): run stage 1 first (it resumes an unfinished one)"
  "${PYTHON:-python3}" - "$out" "$0" <<'EOF'
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
try:
    r = json.loads((out / "render_report.json").read_text())
    rss = r["max_rss_mb"]
except (OSError, ValueError, KeyError, TypeError) as err:
    print(f"{sys.argv[2]}: stage 2: {out / 'render_report.json'} is not a render report ({type(err).__name__}: "
          f"{err}): rerun stage 1", file=sys.stderr)
    sys.exit(2)
# a report written again from the folder (its own was damaged) says what is not known, and why
unknown = f"not known ({r['rebuilt']})" if r.get("rebuilt") else "not known"
time_file = out / ".done" / "time.txt"
# a rebuilt report: time.txt is the rendering session's only where older than it (a rerun of an older recipe that
# rebuilt it replaced it)
if time_file.is_file() and (not r.get("rebuilt") or
                            time_file.stat().st_mtime < (out / "render_report.json").stat().st_mtime):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_file.read_text())
    if m:
        rss = int(m.group(1)) / 1024
# each count agrees with its noun, as render's own lines say them ("1 stream", "2 streams")
sessions = unknown if r["sessions"] is None else f"{r['sessions']} session{'' if r['sessions'] == 1 else 's'}"
# a plain number, as render's own lines say it (plain_seconds): %g said 1.08e+06 s for a --hours 300 render
seconds = f"{r['seconds']:.6f}".rstrip("0").rstrip(".")
print(f"rendered      {r['streams']} stream{'' if r['streams'] == 1 else 's'} x {seconds} s at {r['sample_rate']} Hz "
      f"({r['backend']} backend {r.get('precision', 'fp32')}, "
      f"{r['processes']} {'process' if r['processes'] == 1 else 'processes'}, {sessions})")
if r["wall_seconds"] is None:
    print(f"generation    {unknown}")
else:
    print(f"generation    {r['wall_seconds']:.1f} s of wall time, every session's (FLAC encoding and spectrograms not counted)")
if r["realtime_factor"] is None:
    print(f"x real time   {unknown}")
else:
    print(f"x real time   {r['realtime_factor']:.2f} per stream, {r['realtime_factor_all_streams']:.2f} all streams")
print(f"peak memory   {unknown}" if rss is None else f"peak memory   {rss:.0f} MB (last session that rendered)")
counts = r["guard"]["counts"]  # {"silence": 16, "gave up": 5}: said in words, as render's own last line says them
gave_up = 0 if counts is None else counts.pop("gave up", 0)
words = [f"{n} {kind}" for kind, n in sorted((counts or {}).items(), key=lambda item: -item[1])]
words += [f"{gave_up} {'window' if gave_up == 1 else 'windows'} given up"] if gave_up else []
print(f"guard events  {unknown if counts is None else ', '.join(words) or 'none'}")
print(f"files         {', '.join(r['paths'])}")
EOF
}

# "1 stream", "2 streams": a count and its noun, agreeing (COUNT WORD)
counted() {
  if [ "$1" = 1 ]; then echo "$1 $2"; else echo "$1 $2s"; fi
}

# Stage 1 keeps no marker: wavegen render itself knows whether OUT holds this render complete.
if in_stage_range 1; then
  echo "== stage 1: render $(counted "$streams" stream) x ${seconds} s into $out (rerun to resume)"
  render
fi
if in_stage_range 2; then  # no marker: the report is shown every time
  echo "== stage 2: report"
  report
fi
