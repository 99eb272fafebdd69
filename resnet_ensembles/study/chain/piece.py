"""One piece of the paper chain (experiments/paper_chain.py), and the preparation a remote machine needs.

A piece seeds --work_dir from the committed state, runs the chain's steps in a child process, stops it when
the budget is spent (SIGTERM: training checkpoints at its next step; SIGKILL after a grace period) and writes
the new state and one log line into the out folder. This process supervises only: it never touches a device,
so the child holds the accelerator alone.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Iterable, Optional

from resnet_ensembles.utils.provenance import sha256
from resnet_ensembles.study.chain import files as chain_files, runner as chain
from resnet_ensembles.utils.provenance import git_commit

WHEELS = ("ml-collections==1.1.0",)  # pure Python, missing on a bare GPU image (absl-py, PyYAML are there)
TRAVEL_LIMIT = 64 << 20              # what a remote machine is sent at most
CHECKPOINT_MB = 13.2                 # one ResNet-110 checkpoint in the state while a network trains


def trained_rows(work_dir: str, runs: Iterable[str]) -> dict[str, list[dict]]:
  """run -> its metrics.jsonl rows, for the runs that have begun training in `work_dir`."""
  out = {}
  for run in runs:
    path = os.path.join(work_dir, "train", run, "metrics.jsonl")
    if os.path.exists(path):
      with open(path) as f:
        out[run] = [json.loads(line) for line in f if line.strip()]
  return out


def _last_step(rows: list[dict]) -> int:
  return max((x["step"] for x in rows), default=0)


def supervise(cmd: list[str], deadline: float, grace_s: float, asked: Callable[[], bool]) -> tuple[str, int]:
  """Runs `cmd` until it ends, `deadline` (epoch seconds) passes or `asked()` turns true; then SIGTERM, and
  SIGKILL after `grace_s`. Returns (how it stopped, exit status)."""
  proc = subprocess.Popen(cmd, cwd=os.getcwd())
  stopped = "finished"
  while proc.poll() is None and not asked() and time.time() < deadline:
    time.sleep(0.1)
  if proc.poll() is None:
    stopped = "sigterm" if asked() else "budget"
    proc.send_signal(signal.SIGTERM)  # training: checkpoint at the next step, exit 143; other steps: exit now
    try:
      proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
      stopped += ", killed"
      proc.kill()
      proc.wait()
  if stopped == "finished" and proc.returncode != 0:
    stopped = f"error (exit {proc.returncode})"
  return stopped, proc.returncode


def run_piece(config, *, state_dir: str, work_dir: str, out_dir: str, child_cmd: list[str], started: float,
              budget_s: float, grace_s: float, config_args: list[str]) -> int:
  """One piece: seed, run the child under the budget, collect the state into `out_dir`. 0 unless it failed."""
  if not out_dir:
    raise ValueError("--out_dir is required for a piece")
  if any(os.path.exists(os.path.join(out_dir, n)) for n in ("piece.json", "state.tar", "state.tar.00")):
    raise FileExistsError(f"--out_dir {out_dir} holds a piece already")
  steps = chain.steps_of(config)
  chain_files.seed(state_dir, work_dir)
  before_done = chain.done_steps(config, work_dir)
  before = {r: _last_step(rows) for r, rows in trained_rows(work_dir, config.chain.runs).items()}
  print(f"[piece] state {state_dir} (piece {chain_files.piece_number(state_dir)}), done: "
        f"{before_done or 'nothing'}; budget {budget_s:.0f} s", flush=True)
  asked = []  # a SIGTERM to this process (a person, a scheduler) stops the piece as the budget does
  signal.signal(signal.SIGTERM, lambda signum, frame: asked.append(signum))
  stopped, rc = supervise(child_cmd, started + budget_s, grace_s, lambda: bool(asked))
  after_done = chain.done_steps(config, work_dir)
  progress, images, rates = {}, 0, []
  for run, rows in trained_rows(work_dir, config.chain.runs).items():
    first, last = before.get(run, 0), _last_step(rows)
    if last != first:
      progress[run] = [first, last]
      images += (last - first) * config.train.batch_size
      rates += [x["train/images_per_sec"] for x in rows if x["step"] > first and "train/images_per_sec" in x]
  todo = [s for s in steps if s not in after_done]
  line = {"piece": chain_files.piece_number(work_dir) + 1, "started": chain_files.utc(started),
          "wall_s": round(time.time() - started, 1), "budget_s": budget_s, "stopped": stopped, "exit": rc,
          "steps_done_now": [s for s in after_done if s not in before_done], "stage": todo[0] if todo else "all done",
          "train_steps": progress, "train_images": images,
          "train_images_per_s": round(sum(rates) / len(rates), 1) if rates else None,
          "machine": chain_files.read_json(os.path.join(work_dir, "chain", "machine.json")),
          "git_commit": git_commit(), "config": config_args}
  written = chain_files.collect(work_dir, out_dir, line, chain.live_runs(config, work_dir))
  sizes = {n: os.path.getsize(os.path.join(out_dir, n)) for n in written}
  print(f"[piece] {json.dumps(line, sort_keys=True)}", flush=True)
  print(f"[piece] wrote {out_dir}: " + ", ".join(f"{n} {s / 1e6:.2f} MB" for n, s in sizes.items())
        + f"; {time.time() - started:.0f} s in all; next: {line['stage']}", flush=True)
  return 0 if stopped in ("finished", "budget", "sigterm") else 1


def travel_bytes(root: str, extra: Iterable[str]) -> dict[str, int]:
  """What a remote machine is sent from the checkout `root`: tracked + untracked-not-ignored files + carried paths."""
  git = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, check=True).stdout
  size = lambda names: sum(os.path.getsize(os.path.join(root, n)) for n in names
                           if os.path.isfile(os.path.join(root, n)) and not os.path.islink(os.path.join(root, n)))
  out = {"tracked": size(git("ls-files", "-z").split("\0")[:-1]),
         "untracked": size(git("ls-files", "-z", "-o", "--exclude-standard").split("\0")[:-1])}
  for path in extra:
    out[path] = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(root, path)) for f in fs)
  out["total"] = sum(out.values())
  return out


def prepare(root: str, data_folder: str, pack_sha256: str, state_dir: str,
            download: Optional[Callable[[str, str], None]] = None) -> None:
  """Writes <root>/.devdata (the CIFAR-10 pack, checked against `pack_sha256`; the wheels; the commit) and
  checks that what a remote machine is sent fits TRAVEL_LIMIT, warning when the next piece's state would not."""
  from resnet_ensembles.data import for_run, pack
  dev = os.path.join(root, ".devdata")
  wheels = os.path.join(dev, "wheels")
  os.makedirs(wheels, exist_ok=True)
  out = os.path.join(dev, "cifar10-jpeg.cifarpack")
  if not os.path.exists(out) or sha256(out) != pack_sha256:
    print(f"packing {data_folder} into {out} ...", flush=True)
    pack.pack_folder(data_folder, out, description=for_run.describe_folder(data_folder))
    if sha256(out) != pack_sha256:
      raise ValueError(f"{out} has sha256 {sha256(out)}, not the {pack_sha256} of the shared JPEG copy: another "
                       "folder? (the chain's numbers are of that copy)")
  download = download or (lambda req, dest: subprocess.run(
      [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", dest, req], check=True))
  for req in WHEELS:
    name, version = req.split("==")
    if not any(f.startswith(f"{name.replace('-', '_')}-{version}-") for f in os.listdir(wheels)):
      download(req, wheels)
  with open(os.path.join(dev, "commit.txt"), "w") as f:
    f.write(git_commit() + "\n")
  sizes = travel_bytes(root, [".devdata"])
  left = TRAVEL_LIMIT - sizes["total"]
  print("what a remote machine is sent: " + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in sizes.items())
        + f" of {TRAVEL_LIMIT >> 20} MiB ({left / 2**20:.2f} MiB to spare)")
  if left < 0:
    raise RuntimeError("over the 64 MiB budget for what a remote machine is sent (see docs/paper_chain.md, Size)")
  if left < (14 << 20) and not glob.glob(os.path.join(state_dir, "train", "*", "checkpoints", "*")):
    print(f"WARNING: {left / 2**20:.1f} MiB to spare: a piece that trains a ResNet-110 hands back a state with a "
          f"{CHECKPOINT_MB} MiB checkpoint, and the next piece could not be sent. Free room first "
          "(docs/paper_chain.md, Size).")
  print(f"(the state holds one ResNet-110 checkpoint, {CHECKPOINT_MB} MiB, while a network trains: a piece that "
        "starts a training needs that much more room for the next)")
  print(f"commit {git_commit()}; now: device run with command 'bash experiments/paper_chain.sh', carry ['.devdata']")
