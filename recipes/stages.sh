# Sourced by the recipes: stage gating. Before sourcing, a recipe sets `dir` (its work folder),
# `stage` and `stop_stage` (the range to run). A finished step leaves a marker in $dir/.done/,
# so a rerun skips it; delete the marker (or the folder) to redo it.
mkdir -p "$dir/.done"

run_step() {  # run_step N MARKER "title" command...: one of the steps of stage N, marked by its own name
  local n=$1 marker=$2 title=$3; shift 3
  if [ "$n" -lt "$stage" ] || [ "$n" -gt "$stop_stage" ]; then return; fi
  if [ -f "$dir/.done/$marker" ]; then echo "== stage $n: $title (done before, skipped)"; return; fi
  echo "== stage $n: $title"
  "$@"
  touch "$dir/.done/$marker"
}

run_stage() {  # run_stage N "title" command...: a stage that is one step (its marker: N)
  local n=$1; shift
  run_step "$n" "$n" "$@"
}
