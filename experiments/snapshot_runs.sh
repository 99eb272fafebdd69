#!/usr/bin/env bash
# Copies the latest checkpoint, config and metrics of long training runs into results/in_progress/, so a
# run can continue on a machine that lost /work/runs (a session's background processes end with it):
#   bash experiments/snapshot_runs.sh /work/runs/resnet32_cpu /work/runs/plain32_cpu
# To continue: mkdir -p /work/runs && cp -r results/in_progress/<run> /work/runs/ and rerun the same
# experiments.train command (it resumes from the copied checkpoint).
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
