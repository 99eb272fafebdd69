#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv from requirements.txt on first use, then
#   ./run.sh main   the main job on this CPU with defaults: the whole study (experiments.reproduce, `cpu` config)
#                   in runs/repro, started from the finished study committed in results/repro (networks, sweeps),
#                   so it redoes only what this machine changes and writes runs/repro/report.md in minutes
#   ./run.sh scratch  the same study trained from nothing (about a day of a 2-core CPU); resumes when rerun
#   ./run.sh quick  a 1-epoch ResNet-20 run on a data subset that prints its test error (a smoke test)
#   ./run.sh test   the test suite
#   ./run.sh python -m experiments.<job> ...   anything else inside the environment
# Data: CIFAR10_DIR (a <root>/<split>/<class>/*.jpg copy) wins; else ../shared/data/cifar10-jpeg beside
# the checkout when present; else TFDS cifar10 (needs internet or prepared TFDS data).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
venv="${VENV:-$here/.venv}"
stamp="$venv/.requirements.sha1"
want="$(sha1sum requirements.txt | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[run.sh] setting up $venv from requirements.txt (first run only; a minute or two)" >&2
  python3 -m venv "$venv"
  # uv installs the same pinned set as pip (compiled to bytecode, as pip does), downloading in parallel: 31 s
  # instead of pip's 88 s on a 2-core x86 CPU, nothing cached. Where uv cannot be had or fails, pip installs it.
  if ! { "$venv/bin/python" -m pip install -q uv==0.13.10 >&2 &&
         "$venv/bin/python" -m uv pip install -q --no-cache --compile-bytecode --python "$venv/bin/python" \
           -r requirements.txt >&2; }; then
    echo "[run.sh] uv unavailable or failed; installing with pip" >&2
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q -r requirements.txt >&2
  fi
  echo "$want" > "$stamp"
fi
if [ -z "${CIFAR10_DIR:-}" ] && [ -d "$here/../shared/data/cifar10-jpeg" ]; then
  export CIFAR10_DIR="$(cd "$here/../shared/data/cifar10-jpeg" && pwd)"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
cmd="${1:-main}"
[ $# -gt 0 ] && shift
case "$cmd" in
  main) exec "$venv/bin/python" -m experiments.reproduce --config=experiments/configs/reproduce.py:cpu \
          --workdir="${WORKDIR:-runs/repro}" --start_from=results/repro "$@" ;;
  scratch) exec "$venv/bin/python" -m experiments.reproduce --config=experiments/configs/reproduce.py:cpu \
          --workdir="${WORKDIR:-runs/repro_scratch}" "$@" ;;
  quick) exec "$venv/bin/python" -m experiments.train \
          --config=experiments/configs/cifar10.py:resnet20,quick --workdir="${WORKDIR:-runs/quickstart}" "$@" ;;
  test) exec "$venv/bin/python" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder --durations=15 tests "$@" ;;
  python) exec "$venv/bin/python" "$@" ;;
  *) echo "usage: ./run.sh [main|scratch|quick|test|python ...]" >&2; exit 2 ;;
esac
