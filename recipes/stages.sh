# Sourced by the recipes: stage gating. Before sourcing, a recipe sets `stage` and `stop_stage`
# (the range to run, from its --stage and --stop-stage) and `dir` (its work folder). Sourcing
# checks the range first: a value that is not a stage number (0, 1, 2 ...) is a usage error
# naming it, exit code 2, before any stage runs or anything is written. A finished step leaves a
# marker in $dir/.done/, so a rerun skips it; delete the marker (or the folder) to redo it. A
# recipe that keeps markers of its own sets dir="" and uses the check and in_stage_range alone.
#
# A stage that works from a trained model (render, eval) is done FOR that model and its settings:
# `stage_record RUN SETTING...` is one line naming them (the sha256 of RUN's best weights, and the
# settings), its marker holds that line, and `marker_is MARKER RECORD` is true only while the marker
# still holds it. When the model trains on (its best weights change) or a setting changes, the
# record differs and the stage runs again instead of reporting "done before" for outputs of the
# older model. A marker written before markers held records (empty) differs from every record.
# `run_model_stage N RUN ...` records the model alone; `run_for_record N "$(stage_record RUN SETTING...)" ...`
# the model and settings (the conditioned recipe's render length, say).
#
# Options: a recipe sources this file once more BEFORE its option loop, as `stages_options=1 source
# .../stages.sh`, for need_value, from_caller and recipe_help alone (nothing is checked or made then);
# each option that takes a value calls `need_value "$@"` first, so a missing value is "OPTION needs a
# value", exit code 2; a path option goes through from_caller; -h/--help calls recipe_help. After the loop,
# need_count OPTION VALUE (a whole number, 1 or more) and need_positive OPTION VALUE UNIT (a positive number)
# refuse a value no stage could use, exit code 2, before the first stage runs (not after hours of them).

need_value() {  # need_value "$@" at an option that takes a value: exit 2 unless a value follows it
  # (nothing, an empty word or another option in its place is "OPTION needs a value")
  if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#--}" != "$2" ]; then
    echo "$0: $1 needs a value" >&2
    exit 2
  fi
}
from_caller() {  # from_caller PATH: PATH as the caller meant it: a relative one is taken from the folder the
  # recipe was run in ($started, which the recipe sets before it changes to the repository's root)
  case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$started/$1" ;; esac
}
recipe_help() {  # recipe_help: print the recipe's header comment (its usage, defaults and stages), exit 0
  sed -n '2,/^set -euo pipefail/{/^#/p;}' "$0"
  exit 0
}
positive_number() {  # positive_number VALUE [SCALE]: VALUE x SCALE printed, or exit 1 unless VALUE > 0 and finite
  "${PYTHON:-python3}" - "$@" <<'EOF'
import math, sys
try:
    value = float(sys.argv[1]) * float(sys.argv[2] if len(sys.argv) > 2 else 1)
except ValueError:
    sys.exit(1)
if not (math.isfinite(value) and value > 0):
    sys.exit(1)
print(repr(value) if len(sys.argv) > 2 else sys.argv[1])
EOF
}
need_positive() {  # need_positive OPTION VALUE UNIT: exit 2 unless VALUE is a positive number (of UNIT)
  positive_number "$2" >/dev/null || { echo "$0: $1 takes a positive number of $3, not '$2'" >&2; exit 2; }
}
need_count() {  # need_count OPTION VALUE: exit 2 unless VALUE is a whole number, 1 or more
  case "$2" in
    ''|*[!0-9]*) ;;
    *) if [ "$((10#$2))" -ge 1 ]; then return 0; fi ;;
  esac
  echo "$0: $1 takes a whole number, 1 or more, not '$2'" >&2
  exit 2
}
if [ "${stages_options-}" = 1 ]; then unset stages_options; return 0; fi  # before the option loop: these alone

check_stage_number() {  # check_stage_number OPTION VALUE: exit 2 unless VALUE is a whole number
  case "$2" in
    ''|*[!0-9]*)
      echo "$0: $1 takes a stage number (0, 1, 2 ...), not '$2'" >&2
      exit 2 ;;
  esac
}
check_stage_number --stage "${stage-}"
check_stage_number --stop-stage "${stop_stage-}"
stage=$((10#$stage)) stop_stage=$((10#$stop_stage))  # 08 is 8, not an octal error in $(( ))

in_stage_range() {  # in_stage_range N: N is inside --stage..--stop-stage
  [ "$1" -ge "$stage" ] && [ "$1" -le "$stop_stage" ]
}

if [ -n "${dir-}" ]; then mkdir -p "$dir/.done"; fi

run_forwarding() {  # run_forwarding [--wrapper] PROGRAM ARG...: PROGRAM (not a shell function) run as the recipe's
  # child, a SIGTERM sent to the recipe (kill, a supervisor, a scheduler's time limit) passed on to it, and waited
  # for: bash, ended by a SIGTERM while a command ran in the foreground, left it running (a training on for minutes
  # unwatched, its lock held, and what it saved said to no one). --wrapper: PROGRAM is a wrapper that a SIGTERM
  # ends at once, leaving its command running (GNU time): the signal goes to its child, the command, instead.
  # A Ctrl-C reaches the command from the terminal, as ever, and the recipe waits for it to stop. Returns the
  # command's exit status (wavegen stopped by the signal: 130); TERM and INT traps are unset afterwards.
  local to=child child status
  if [ "$1" = --wrapper ]; then to=children; shift; fi
  if [ "${BASH_VERSINFO[0]}" -lt 4 ] || { [ "${BASH_VERSINFO[0]}" = 4 ] && [ "${BASH_VERSINFO[1]}" -lt 3 ]; }; then
    # bash before 4.3 (macOS's 3.2) starts a command run with & with Ctrl-C (SIGINT, SIGQUIT) ignored, and its
    # exec keeps them so (4.3 on restores them): the command ran on through a Ctrl-C, and the recipe went on to
    # its next stage. Python sets them back before it becomes the command.
    set -- "${PYTHON:-python3}" -c 'import os, signal, sys
for sig in (signal.SIGINT, signal.SIGQUIT):
    signal.signal(sig, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])' "$@"
  fi
  ( exec "$@" ) <&0 &  # <&0: the command keeps the recipe's input (a command run with & gets /dev/null)
  child=$!
  # INT's trap before TERM's: a caught SIGTERM says both are set (tests/test_recipe_signals.py waits for it)
  trap ':' INT  # the command has the Ctrl-C itself (a second, forwarded, would stop it at once): wait for it
  if [ "$to" = children ] && command -v pkill >/dev/null; then  # (without pkill: to the wrapper, as it was)
    trap 'pkill -TERM -P "$child" || true' TERM
  else
    trap 'kill -TERM "$child" 2>/dev/null || true' TERM
  fi
  while :; do
    status=0
    wait "$child" || status=$?
    # a signal's trap ends the wait (status above 128) while the command may still run: wait on for its status
    if [ "$status" -gt 128 ] && kill -0 "$child" 2>/dev/null; then continue; fi
    break
  done
  trap - TERM INT
  return "$status"
}

run_step() {  # run_step N MARKER "title" command...: one of the steps of stage N, marked by its own name
  local n=$1 marker=$2 title=$3; shift 3
  in_stage_range "$n" || return 0
  if [ -f "$dir/.done/$marker" ]; then say_skipped "$n" "$title" "$marker"; return; fi
  echo "== stage $n: $title"
  "$@"
  touch "$dir/.done/$marker"
}

say_skipped() {  # say_skipped N "title" MARKER: the line for a step done before, naming the marker that redoes it
  echo "== stage $1: $2 (done before, skipped; to redo it, delete $dir/.done/$3)"
}

run_stage() {  # run_stage N "title" command...: a stage that is one step (its marker: N)
  local n=$1; shift
  run_step "$n" "$n" "$@"
}

run_model_stage() {  # run_model_stage N RUN "title" command...: run_stage for a stage done FOR RUN's model: its
  # marker holds stage_record RUN, and a marker of an older model (or an empty one) runs it again, with again=1
  # set for the command (a render passes --restart then: its folder holds the older model's render)
  local n=$1 run=$2 title=$3; shift 3
  in_stage_range "$n" || return 0
  run_for_record "$n" "$(stage_record "$run")" "$title" "$@"
}

run_for_record() {  # run_for_record N RECORD "title" command...: run_stage for a stage done FOR RECORD (stage_record
  # RUN SETTING...: a model and the settings its outputs depend on); its marker holds RECORD, and a marker holding
  # another record (an older model, other settings, or none) runs it again, with again=1 set for the command
  local n=$1; shift
  run_step_for_record "$n" "$n" "$@"
}

run_step_for_record() {  # run_step_for_record N MARKER RECORD "title" command...: run_for_record for one of the
  # steps of stage N, marked by its own name; RECORD is stage_record's, or any line naming the settings the
  # step's outputs depend on (a bench's sizes: a --quick suite's marker then does not skip the full one)
  local n=$1 marker=$2 record=$3 title=$4 older="other settings"; shift 4
  in_stage_range "$n" || return 0
  case "$record" in "model "*" "*) older="an older model or other settings" ;; "model "*) older="an older model" ;; esac
  again=0
  if marker_is "$dir/.done/$marker" "$record"; then say_skipped "$n" "$title" "$marker"; return; fi
  if [ -f "$dir/.done/$marker" ]; then
    again=1
    echo "== stage $n: $title (done before for $older: again)"
  else
    echo "== stage $n: $title"
  fi
  "$@"
  echo "$record" > "$dir/.done/$marker"
}

stage_record() {  # stage_record RUN SETTING...: "model SHA256 SETTING..." (SHA256 "none" while RUN has no best/)
  local weights="$1/best/model.safetensors" sha=none; shift
  if [ -f "$weights" ]; then
    if command -v sha256sum >/dev/null; then sha=$(sha256sum "$weights"); else sha=$(shasum -a 256 "$weights"); fi
    sha=${sha%% *}
  fi
  echo "model $sha${*:+ $*}"
}

marker_is() {  # marker_is MARKER RECORD: MARKER exists and holds RECORD (one line)
  local held=""
  [ -f "$1" ] || return 1
  read -r held < "$1" || true
  [ "$held" = "$2" ]
}

trained_steps() {  # trained_steps MARKER: the step count a training stage's marker records (empty: none)
  local recorded=""
  if [ -f "$1" ]; then read -r recorded < "$1" || true; fi
  recorded=${recorded%% *}  # the count, before the record of what trained (run_training_for)
  case "$recorded" in ''|*[!0-9]*) recorded="" ;; esac
  echo "$recorded"
}

trained_record() {  # trained_record MARKER: what a training stage's marker records beside its count (empty: none)
  local held=""
  if [ -f "$1" ]; then read -r held < "$1" || true; fi
  case "$held" in *" "*) echo "${held#* }" ;; *) echo "" ;; esac
}

run_training() {  # run_training N STEPS "title" command...: a training stage (its marker: N, holding STEPS)
  # Skipped when its marker records at least STEPS; asked for more, it runs again and trains on
  # (wavegen train resumes the run up to the larger --max-steps). A marker without a count
  # (written before markers recorded one) counts as none: the run is resumed, and ends at once
  # where it already reached STEPS.
  local n=$1 steps=$2; shift 2
  run_training_for "$n" "$steps" "" "$@"
}

run_training_for() {  # run_training_for N STEPS RECORD "title" command...: run_training for a training whose
  # model and settings RECORD names (one line: the preset, the --set overrides); its marker holds "STEPS RECORD".
  # Skipped only for the same RECORD: other settings (another --model) run the command again, and wavegen train
  # says whether the run takes them (one begun with other settings is refused, naming what differs); it was
  # "trained before, skipped", and the stages after it went on with the run's older model as if it were this
  # one. A marker of a count alone (an older recipe's, which recorded no settings) says nothing of what trained:
  # it runs again too (a run trained that far with these settings resumes and ends at once).
  local n=$1 steps=$2 record=$3 title=$4 recorded held; shift 4
  in_stage_range "$n" || return 0
  recorded=$(trained_steps "$dir/.done/$n")
  held=$(trained_record "$dir/.done/$n")
  if [ -n "$recorded" ] && [ -n "$record" ] && [ -z "$held" ]; then
    echo "== stage $n: $title (trained to step $recorded before, but its marker, an older recipe's, does not say" \
         "with which settings: wavegen train resumes the run, or names what differs)"
  elif [ -n "$recorded" ] && [ -n "$held" ] && [ "$held" != "$record" ]; then
    echo "== stage $n: $title (trained to step $recorded before with other settings: wavegen train resumes the" \
         "run, or names what differs)"
  elif [ -n "$recorded" ] && [ "$recorded" -ge "$steps" ] 2>/dev/null; then  # its marker redoes nothing: the run resumes
    echo "== stage $n: $title (trained to step $recorded before, skipped; a larger --steps trains on)"; return
  elif [ -n "$recorded" ]; then
    echo "== stage $n: $title (trained to step $recorded before: training on)"
  else
    echo "== stage $n: $title"
  fi
  "$@"
  echo "$steps${record:+ $record}" > "$dir/.done/$n"
}
