"""Where a result came from: the git commit of the code that produced it, written beside the numbers."""
from __future__ import annotations

import os
import subprocess


def git_commit() -> str:
  """HEAD of the repository holding this package ("unknown" outside a git checkout)."""
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"
