#!/usr/bin/env bash
# Copies the latest checkpoint, config and metrics of long training runs into results/in_progress/, so a
# run can continue on another machine or after its workdir is lost (a preemptible instance, a recycled
# notebook runtime):
#   bash experiments/snapshot_runs.sh runs/resnet32_cpu runs/plain32_cpu     # then commit results/in_progress
# To continue on any checkout of that commit: mkdir -p runs && cp -r results/in_progress/<run> runs/ and rerun
# the same experiments.train command (it resumes from the copied checkpoint).
set -euo pipefail
dest="$(cd "$(dirname "$0")/.." && pwd)/results/in_progress"
for run in "$@"; do
  name="$(basename "$run")"
  latest="$(ls "$run/checkpoints" | grep -E '^[0-9]+$' | sort -n | tail -1)"
  rm -rf "$dest/$name" && mkdir -p "$dest/$name/checkpoints"
  cp "$run"/config.json "$run"/metrics.jsonl "$dest/$name/"
  for f in data.json starts.jsonl; do [ -f "$run/$f" ] && cp "$run/$f" "$dest/$name/"; done
  cp -r "$run/checkpoints/$latest" "$dest/$name/checkpoints/"
  echo "$name: step $latest -> $dest/$name"
done
