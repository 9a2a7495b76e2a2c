# Sourced by the recipes: stage gating. Before sourcing, a recipe sets `dir` (its work folder),
# `stage` and `stop_stage` (the range to run). A finished stage leaves $dir/.done/N, so a rerun
# skips it; delete the marker (or the folder) to redo it.
mkdir -p "$dir/.done"

run_stage() {  # run_stage N "title" command...
  local n=$1 title=$2; shift 2
  if [ "$n" -lt "$stage" ] || [ "$n" -gt "$stop_stage" ]; then return; fi
  if [ -f "$dir/.done/$n" ]; then echo "== stage $n: $title (done before, skipped)"; return; fi
  echo "== stage $n: $title"
  "$@"
  touch "$dir/.done/$n"
}
