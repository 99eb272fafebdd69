"""Finished chunks of a long lesion sweep on disk, so that a sweep killed (even by `kill -9`) continues
where it stopped when rerun, and its result equals an uninterrupted run's.

A `ChunkStore` is a folder (by convention `<out>.json.partial/<network label>/`, next to the JSON the sweep
ends in: `partial_dir`) holding `key.json` (everything the numbers and the chunking depend on: the network's
fingerprint, the mask/order stack, the test images, BatchNorm mode, batch size, chunk size, branch scale,
the recalibration settings and whatever the caller adds, e.g. the sweep kind and its seed) and one
`chunk_<i>.npz` per finished chunk (its networks' per-class hit counts and top-5 hits over every test image),
each carrying the key's digest. Every file is written to a temporary name and renamed, so a kill leaves
whole files or none. A folder written under another key is never mixed in: it is emptied, with a log line
saying so, and the sweep starts afresh. The caller removes the folder (`discard`) once the final JSON is
written. On several processes process 0 reads and writes the folder and broadcasts what it holds.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from typing import Any, Optional

import numpy as np
from absl import logging

KEY_FILE = "key.json"
SUFFIX = ".partial"


def partial_dir(out_json: str, label: Optional[str] = None) -> str:
  """The chunk folder of the sweep that ends in `out_json` (one subfolder per network `label`)."""
  base = out_json + SUFFIX
  if label is None:
    return base
  return os.path.join(base, "".join(c if c.isalnum() or c in "-_." else "_" for c in label) or "_")


def discard(out_json: str) -> None:
  """Removes the chunk folder(s) of the sweep that ends in `out_json` (after that JSON is written)."""
  shutil.rmtree(out_json + SUFFIX, ignore_errors=True)


def digest(*arrays: Any) -> str:
  """16 hex digits of a sha256 over arrays (dtype, shape, bytes): e.g. a mask stack or the test images."""
  h = hashlib.sha256()
  for a in arrays:
    if a is None:
      h.update(b"none")
      continue
    a = np.ascontiguousarray(np.asarray(a))
    h.update(f"{a.dtype}:{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def _write_atomic(path: str, write) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


class ChunkStore:
  """The finished chunks of one sweep of one network under one `key` (a JSON-able dict)."""

  def __init__(self, folder: str, key: dict, num_chunks: int, writer: bool = True):
    self.folder, self.num_chunks, self.writer = folder, num_chunks, writer
    self.key = json.loads(json.dumps(dict(key, num_chunks=num_chunks), sort_keys=True))
    self.key_digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:16]
    if writer:
      self._open()

  def _open(self) -> None:
    path = os.path.join(self.folder, KEY_FILE)
    if os.path.exists(path):
      try:
        with open(path) as f:
          old = json.load(f)
      except (OSError, ValueError):
        old = None
      if old == self.key:
        return
      changed = sorted(k for k in set(self.key) | set(old or {}) if (old or {}).get(k) != self.key.get(k))
      logging.warning("%s holds chunks of a sweep with other settings (%s): starting afresh", self.folder,
                      ", ".join(changed) if old is not None else "unreadable key.json")
      shutil.rmtree(self.folder, ignore_errors=True)
    os.makedirs(self.folder, exist_ok=True)
    _write_atomic(path, lambda f: f.write(json.dumps(self.key, sort_keys=True, indent=1).encode()))

  def _chunk_path(self, i: int) -> str:
    return os.path.join(self.folder, f"chunk_{i:05d}.npz")

  def load(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{chunk index: (correct [chunk, C], top5 [chunk])} of every finished chunk written under this key."""
    done = {}
    if not self.writer:
      return done
    for path in sorted(glob.glob(os.path.join(self.folder, "chunk_*.npz"))):
      try:
        i = int(os.path.basename(path)[6:-4])
        with np.load(path) as z:
          if str(z["key"]) != self.key_digest or not 0 <= i < self.num_chunks:
            raise ValueError("written under another key")
          done[i] = (z["correct"], z["top5"])
      except Exception as e:  # noqa: BLE001  (a damaged or foreign file is evaluated again, never used)
        logging.warning("ignoring %s (%s): its chunk is evaluated again", path, e)
    return done

  def save(self, i: int, correct: np.ndarray, top5: np.ndarray) -> None:
    if self.writer:
      _write_atomic(self._chunk_path(i), lambda f: np.savez(f, key=np.array(self.key_digest), correct=correct,
                                                            top5=top5))
