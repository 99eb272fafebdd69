"""Where a result came from: the git commit of the code that produced it, written beside the numbers, and the
sha256 of the files it read (imported weights, the paper chain's data pack and networks)."""
from __future__ import annotations

import hashlib
import os
import subprocess


def git_commit() -> str:
  """$RESNET_ENSEMBLES_COMMIT if set (code copied to a pod or a GPU machine, whose git state may not be the
  code's), else HEAD of the repository holding this package, with "-dirty" when tracked files differ from
  it; "unknown" outside a git checkout."""
  if os.environ.get("RESNET_ENSEMBLES_COMMIT"):
    return os.environ["RESNET_ENSEMBLES_COMMIT"]
  git = lambda *args: subprocess.run(["git", *args], capture_output=True, text=True,
                                     cwd=os.path.dirname(os.path.abspath(__file__)))
  try:
    head = git("rev-parse", "HEAD")
    if head.returncode:
      return "unknown"
    return head.stdout.strip() + ("-dirty" if git("diff", "--quiet", "HEAD").returncode else "")
  except OSError:
    return "unknown"


STARTS_FILE = "starts.jsonl"


def record_start(workdir: str, step: int) -> None:
  """Appends {time, step, git_commit, host, devices} to workdir/starts.jsonl: a run resumed several times, on
  one machine or several, then says which code trained which steps."""
  import json
  import socket
  import time
  import jax
  row = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "step": int(step),
         "git_commit": git_commit(), "host": socket.gethostname(),
         "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}"}
  with open(os.path.join(workdir, STARTS_FILE), "a") as f:
    f.write(json.dumps(row) + "\n")


def read_starts(workdir: str) -> list[dict]:
  import json
  path = os.path.join(workdir, STARTS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def trained_by(starts: list[dict], final_step: int) -> str:
  """'<commit> on <machine>: steps a-b; ...' for the starts that trained steps (a resume at the end trains none);
  steps trained before the first recorded start (runs older than starts.jsonl) are named as unrecorded."""
  ends = [s["step"] for s in starts[1:]] + [final_step]
  first = starts[0]["step"] if starts else final_step
  parts = [f"steps 0-{first}: not recorded"] if first > 0 else []
  parts += [f"{s['git_commit'][:7]} on {s.get('machine') or s.get('devices') or s.get('host', '?')}: steps "
            f"{s['step']}-{end}" for s, end in zip(starts, ends) if end > s["step"]]
  return "; ".join(parts) or "no record"


def sha256(path: str) -> str:
  """Hex sha256 of a file's bytes, read 1 MiB at a time (a data pack need not be in memory twice)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()
