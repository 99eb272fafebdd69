#!/usr/bin/env bash
# One piece of the ResNet-110 study on a GPU machine reached for short commands (a notebook runtime, a
# preemptible instance, a queued job with a time limit; docs/paper_chain.md). From the repository root of a copy
# of the checkout (tracked files plus .devdata):
#
#   OUT=<folder to bring back> bash experiments/paper_chain.sh [more flags for experiments.paper_chain]
#
# Needs .devdata from `python -m experiments.paper_chain --prepare` (the CIFAR-10 pack, the ml-collections wheel
# that a bare GPU image may lack, the commit). Writes the new state into $OUT (bring the folder back and absorb
# it with `python -m experiments.paper_chain --absorb=<that folder> --commit`) and the whole log into
# $OUT/piece.log.
# BUDGET_S (default 480) counts from this script's start: with the 60 s grace and the collection, the piece
# ends well inside one 600 s command.
START=$(date +%s)
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-${TMPDIR:-/tmp}/paper_chain_out}
mkdir -p "$OUT"
if [ ! -f .devdata/cifar10-jpeg.cifarpack ] || [ ! -f .devdata/commit.txt ]; then
  echo "no .devdata here: run 'python -m experiments.paper_chain --prepare' on the checkout and carry ['.devdata']"
  exit 2
fi
if ! $PY -c "import ml_collections" 2>/dev/null; then  # pure-Python wheels carried in .devdata/wheels
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "${TMPDIR:-/tmp}/paper_chain_site" \
      .devdata/wheels/*.whl || exit 3
  export PYTHONPATH=${TMPDIR:-/tmp}/paper_chain_site${PYTHONPATH:+:$PYTHONPATH}
fi
export RESNET_ENSEMBLES_COMMIT="$(cat .devdata/commit.txt)" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
$PY -c "import sys, jax, flax, optax, orbax.checkpoint as o, ml_collections; print('python', sys.version.split()[0], \
'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__, jax.devices())" \
  || exit 4
$PY -m experiments.paper_chain --budget_s="${BUDGET_S:-480}" --started_at="$START" --out_dir="$OUT" "$@" 2>&1 \
  | tee "$OUT/piece.log" | grep -v -E '^[IW][0-9]{4} '   # absl INFO/WARNING lines: in piece.log only
rc=$?
echo "== piece: exit $rc after $(( $(date +%s) - START )) s; $OUT holds:"
ls -l "$OUT"
cat "$OUT/piece.json" 2>/dev/null
exit $rc
