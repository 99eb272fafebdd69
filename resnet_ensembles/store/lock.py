"""One process per folder: an exclusive OS lock on `<folder>/.lock`, so two runs never write the same workdir.

Two `./run.sh quick` started seconds apart on one workdir would otherwise both train, both checkpoint and
interleave their metrics.jsonl lines. The lock is `fcntl.flock` (non-blocking) on an open file: the kernel
drops it when the process ends however it ends (kill -9 included), so a dead run never leaves a stale lock
and there is nothing to clean up. The file itself stays (deleting it would let a third process lock a new
inode while a second still holds the old one); it names the last holder's host, pid and start time, which
the refused process quotes in its one-line error.

Several processes of one multi-host run share a workdir on purpose: only process 0 takes the lock (the
others write nothing of their own there). A process that already holds a folder may enter it again (a
study main around `run`, `train_and_evaluate` around `fit`): the lock counts how deep it is held.

flock is advisory and local to one kernel: on a network file system shared by several machines it may not
exclude a process on another machine (NFSv4 maps it to byte-range locks; some mounts ignore it).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
from typing import Iterator

import jax

LOCK_FILE = ".lock"
_held: dict[str, list[int]] = {}  # real path of the lock file -> [fd, depth], this process's locks
_guard = threading.Lock()


def _holder(fd: int) -> str:
  """Who holds the lock, as the holder wrote it into the file ("another process" if it has not yet)."""
  for _ in range(20):  # the holder writes its name just after locking: give it a moment
    os.lseek(fd, 0, os.SEEK_SET)
    try:
      info = json.loads(os.read(fd, 4096).decode() or "null")
    except (ValueError, UnicodeDecodeError):
      info = None
    if isinstance(info, dict):
      return f"pid {info.get('pid')} on host {info.get('host')} (started {info.get('started')})"
    time.sleep(0.05)
  return "another process"


def _acquire(path: str, folder: str, hint: str) -> int:
  os.makedirs(folder, exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not O_TRUNC: the holder's name must survive
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _holder(fd)
    os.close(fd)
    raise RuntimeError(f"{folder} is in use by {holder}; wait for it or {hint}") from None
  except BaseException:
    os.close(fd)
    raise
  info = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
  os.ftruncate(fd, 0)
  os.pwrite(fd, json.dumps(info).encode(), 0)
  return fd


@contextlib.contextmanager
def hold(folder: str, hint: str = "use another --workdir") -> Iterator[None]:
  """Holds `<folder>/.lock` (creating the folder) for the body; RuntimeError at once, naming the holder,
  when another process holds it. `hint` ends that line: what the user can do instead."""
  if jax.process_index() != 0:
    yield
    return
  path = os.path.realpath(os.path.join(folder, LOCK_FILE))
  with _guard:
    entry = _held.get(path)
    if entry is None:
      entry = _held[path] = [_acquire(path, folder, hint), 0]
    entry[1] += 1
  try:
    yield
  finally:
    with _guard:
      entry[1] -= 1
      if entry[1] == 0:
        del _held[path]
        fcntl.flock(entry[0], fcntl.LOCK_UN)
        os.close(entry[0])

