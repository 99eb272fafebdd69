"""The files of a study advanced piece by piece (experiments/paper_chain.py): seed, collect, absorb.

A chain's state is a folder (results/paper110) laid out as a reproduction workdir (`reproduction`) plus
chain/ (which steps are done, the speed measurement, the piece counter) and chain_log.jsonl (one line per
piece). Each piece copies it into a work folder (`seed`), works there, and `collect`s the new state into an
output folder of a few files that a remote machine hands back (at most MAX_FILES files of at most PART_BYTES):

  piece.json            this piece's log line (also appended to chain_log.jsonl inside the state)
  state.tar             the small state: JSON, jsonl, figures, reports, done files
  checkpoint.tar[.NN]   the latest checkpoint (with optimizer state) of each run still in training
  networks.tar[.NN]     networks whose work is finished in this piece: variables + config, no optimizer
                        (they leave the state: it must travel to the next machine, 64 MiB in all)

`absorb(out_dir, state_dir, networks_dir)` puts such a folder back: the state replaces state_dir, the networks
go to networks_dir (by default state_dir/networks/<run>/), where `chain.git` commits them and takes them out of
the tree again. Only the standard library is imported (the piece's parent process never starts JAX).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Iterable, Optional

from resnet_ensembles.study.chain import tar as chain_tar

MAX_FILES = 8
PART_BYTES = 15 << 20          # under the 16 MiB a returned file may have
WORK_MARKER = ".paper_chain_work"  # a work folder `seed` may wipe
STATE_FILE = os.path.join("chain", "state.json")
LOG_FILE = "chain_log.jsonl"
RETIRED = "retired"            # work folder only: networks finished in this piece
NETWORKS = "networks"          # state_dir/networks/<run>/: finished networks between an absorb and its commit
NETWORKS_JSON = "networks.json"  # state_dir: run -> the commit that holds its network (kept here, not by pieces)
# state_dir entries that people edit between pieces (a piece carries a copy along; absorb keeps this side's)
EDITED_HERE = ("README.md", "predictions")
COMMIT_MARKER = "commit_success.txt"  # orbax writes it into a finished checkpoint
SPEED_FILE = os.path.join("chain", "speed.json")  # the speed step's measurement and precision choice
_NEVER = ("tensorboard",)      # event files: metrics.jsonl holds the same numbers


def bns(config) -> list[str]:
  """The BatchNorm treatments the chain sweeps: lesion.bn, then each chain.extra_bn."""
  return [config.lesion.bn] + [b for b in config.chain.extra_bn if b != config.lesion.bn]


def single_part(workdir: str, run: str, bn: str) -> str:
  """One network's half of a single-deletion JSON that the ResNet and the plain net share."""
  return os.path.join(workdir, "lesion", "resnet", f"single_{bn}.{run}.json")


def read_json(path: str, default=None):
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


def write_json(obj, path: str) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(tmp, path)


def piece_number(state_dir: str) -> int:
  return int(read_json(os.path.join(state_dir, STATE_FILE), {}).get("piece", 0))


def seed(state_dir: str, work_dir: str) -> None:
  """A fresh work folder holding a copy of the state (an empty one for the first piece)."""
  if os.path.exists(work_dir):
    if not os.path.exists(os.path.join(work_dir, WORK_MARKER)):
      raise FileExistsError(f"{work_dir} exists and is not a chain work folder (no {WORK_MARKER}); "
                            "pass another --work_dir")
    shutil.rmtree(work_dir)
  if os.path.isdir(state_dir):
    shutil.copytree(state_dir, work_dir)
  else:
    os.makedirs(work_dir)
  open(os.path.join(work_dir, WORK_MARKER), "w").close()


def latest_checkpoint(run_dir: str) -> Optional[str]:
  """The newest finished orbax step folder of a run (in-progress saves have non-numeric names)."""
  ckpts = os.path.join(run_dir, "checkpoints")
  steps = [int(d) for d in os.listdir(ckpts) if d.isdigit()] if os.path.isdir(ckpts) else []
  return os.path.join(ckpts, str(max(steps))) if steps else None


def _is_junk(rel: str) -> bool:
  parts = rel.split(os.sep)
  return (any(p in _NEVER for p in parts) or ".tmp" in parts[-1] or parts[0] in (RETIRED, NETWORKS)
          or rel == NETWORKS_JSON or parts[-1] in (WORK_MARKER, ".lock") or "checkpoints" in parts)


def state_files(work_dir: str) -> list[str]:
  """The small state: every file of the work folder but checkpoints, retired networks and temporaries."""
  out = []
  for root, dirs, files in os.walk(work_dir):
    dirs.sort()
    for name in sorted(files):
      rel = os.path.relpath(os.path.join(root, name), work_dir)
      if not _is_junk(rel):
        out.append(rel)
  return out


def live_checkpoints(work_dir: str, live_runs: Iterable[str]) -> list[str]:
  """Folders (relative) of the latest checkpoint of each run still needing its network."""
  out = []
  for run in live_runs:
    latest = latest_checkpoint(os.path.join(work_dir, "train", run))
    if latest:
      out.append(os.path.relpath(latest, work_dir))
  return out


def collect(work_dir: str, out_dir: str, log_line: dict, live_runs: Iterable[str]) -> list[str]:
  """Writes the new state into out_dir (see the module docstring); appends `log_line` to the state's log and
  advances its piece counter first. Returns the file names written."""
  state = read_json(os.path.join(work_dir, STATE_FILE), {})
  state.update(piece=int(state.get("piece", 0)) + 1, last_piece=log_line)
  write_json(state, os.path.join(work_dir, STATE_FILE))
  with open(os.path.join(work_dir, LOG_FILE), "a") as f:
    f.write(json.dumps(log_line, sort_keys=True) + "\n")
  os.makedirs(out_dir, exist_ok=True)
  def send(base: str, names: list[str], stem: str) -> list[str]:
    return chain_tar.write_parts(chain_tar.tar_bytes(base, names), out_dir, stem, PART_BYTES)

  written = send(work_dir, state_files(work_dir), "state.tar")
  ckpts = live_checkpoints(work_dir, live_runs)
  if ckpts:
    files = chain_tar.walk_files(work_dir, ckpts)
    for rel in files:  # orbax's marker names the folder it wrote (this machine's path); only its presence counts
      if os.path.basename(rel) == COMMIT_MARKER:
        with open(os.path.join(work_dir, rel), "w") as f:
          f.write("Checkpoint commit was successful.\n")
    written += send(work_dir, files, "checkpoint.tar")
  retired = os.path.join(work_dir, RETIRED)
  if os.path.isdir(retired):
    written += send(retired, chain_tar.walk_files(retired, sorted(os.listdir(retired))), "networks.tar")
  write_json(log_line, os.path.join(out_dir, "piece.json"))
  written.append("piece.json")
  if len(written) > MAX_FILES - 1:  # one left for the wrapper's log (experiments/paper_chain.sh)
    raise RuntimeError(f"{len(written)} files in {out_dir}: with the log, more than the {MAX_FILES} a remote "
                       "machine returns")
  return written


def absorb(out_dir: str, state_dir: str, networks_dir: Optional[str] = None) -> dict:
  """Makes the state that a piece wrote into out_dir the state in state_dir (replacing it whole; refused unless
  the piece started from exactly this state) and moves its finished networks into networks_dir (default
  state_dir/networks). What only this side writes, state_dir/networks.json and state_dir/networks/ (networks
  absorbed but not committed yet), survives the replacement, and so do EDITED_HERE (the piece's copy is
  dropped: what was edited here while the piece ran wins)."""
  networks_dir = networks_dir or os.path.join(state_dir, NETWORKS)
  line = read_json(os.path.join(out_dir, "piece.json"))
  state = chain_tar.joined(out_dir, "state.tar")
  if line is None or state is None:
    raise FileNotFoundError(f"{out_dir} holds no piece (piece.json and state.tar expected)")
  have = piece_number(state_dir)
  if line["piece"] != have + 1:
    raise ValueError(f"{out_dir} holds piece {line['piece']} (started from piece {line['piece'] - 1}); "
                     f"{state_dir} is at piece {have}: absorb the pieces in order, each once")
  tmp = state_dir.rstrip("/") + ".absorbing"
  if os.path.exists(tmp):
    shutil.rmtree(tmp)
  os.makedirs(tmp)
  chain_tar.extract(state, tmp)
  ckpt = chain_tar.joined(out_dir, "checkpoint.tar")
  if ckpt is not None:
    chain_tar.extract(ckpt, tmp)
  if piece_number(tmp) != have + 1:
    raise ValueError(f"{out_dir}: its state.tar is not piece {have + 1}")
  for keep in (NETWORKS, NETWORKS_JSON):  # this side's, not the piece's
    if os.path.exists(os.path.join(state_dir, keep)):
      if os.path.exists(os.path.join(tmp, keep)):
        raise ValueError(f"{out_dir}: its state.tar holds {keep}, which only --absorb writes")
      os.replace(os.path.join(state_dir, keep), os.path.join(tmp, keep))
  for keep in EDITED_HERE:
    if os.path.exists(os.path.join(state_dir, keep)):
      theirs = os.path.join(tmp, keep)
      if os.path.isdir(theirs):
        shutil.rmtree(theirs)
      elif os.path.exists(theirs):
        os.remove(theirs)
      os.replace(os.path.join(state_dir, keep), theirs)
  old = state_dir.rstrip("/") + ".old"
  if os.path.exists(state_dir):
    os.replace(state_dir, old)
  os.replace(tmp, state_dir)
  if os.path.exists(old):
    shutil.rmtree(old)
  nets = chain_tar.joined(out_dir, "networks.tar")
  if nets is not None:
    os.makedirs(networks_dir, exist_ok=True)
    chain_tar.extract(nets, networks_dir)
  return line


def utc(t: Optional[float] = None) -> str:
  return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
