"""Where a result came from: the git commit of the code that produced it, written beside the numbers."""
from __future__ import annotations

import os
import subprocess


def git_commit() -> str:
  """HEAD of the repository holding this package; outside a git checkout (code copied to a pod or a GPU
  machine without .git) $RESNET_ENSEMBLES_COMMIT if set, else "unknown"."""
  if os.environ.get("RESNET_ENSEMBLES_COMMIT") and not os.path.isdir(os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".git")):
    return os.environ["RESNET_ENSEMBLES_COMMIT"]
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


STARTS_FILE = "starts.jsonl"


def record_start(workdir: str, step: int) -> None:
  """Appends {time, step, git_commit, host} to workdir/starts.jsonl: a run resumed across sessions then says
  which code trained which steps."""
  import json
  import socket
  import time
  row = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "step": int(step),
         "git_commit": git_commit(), "host": socket.gethostname()}
  with open(os.path.join(workdir, STARTS_FILE), "a") as f:
    f.write(json.dumps(row) + "\n")


def read_starts(workdir: str) -> list[dict]:
  import json
  path = os.path.join(workdir, STARTS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
