"""Tars that travel: a folder's files as one tar, cut into parts small enough for a remote machine to hand back,
and put back together and unpacked safely on this side (`chain_files.collect` / `chain_files.absorb`).

Only the standard library: the piece's parent process never starts JAX.
"""
from __future__ import annotations

import io
import os
import tarfile
from typing import Iterable, Optional


def tar_bytes(base: str, names: Iterable[str]) -> bytes:
  """The named files under base as one tar, owner-free so the same files give the same bytes."""
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for name in names:
      info = tar.gettarinfo(os.path.join(base, name), arcname=name)
      info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
      if info.isfile():
        with open(os.path.join(base, name), "rb") as f:
          tar.addfile(info, f)
      else:
        tar.addfile(info)
  return buf.getvalue()


def walk_files(base: str, folders: Iterable[str]) -> list[str]:
  """Every file under the given folders of base, relative to base, in a fixed order."""
  out = []
  for folder in folders:
    for root, dirs, files in os.walk(os.path.join(base, folder)):
      dirs.sort()
      out += [os.path.relpath(os.path.join(root, f), base) for f in sorted(files)]
  return out


def write_parts(blob: bytes, out_dir: str, stem: str, part_bytes: int) -> list[str]:
  """Writes blob as out_dir/stem, or as stem.00, stem.01, ... of at most part_bytes each."""
  if len(blob) <= part_bytes:
    names = [stem]
    chunks = [blob]
  else:
    chunks = [blob[i:i + part_bytes] for i in range(0, len(blob), part_bytes)]
    names = [f"{stem}.{i:02d}" for i in range(len(chunks))]
  for name, chunk in zip(names, chunks):
    with open(os.path.join(out_dir, name), "wb") as f:
      f.write(chunk)
  return names


def joined(out_dir: str, stem: str) -> Optional[bytes]:
  """What `write_parts` wrote as stem, whole again (None when neither stem nor its parts exist)."""
  if os.path.exists(os.path.join(out_dir, stem)):
    with open(os.path.join(out_dir, stem), "rb") as f:
      return f.read()
  parts = sorted(n for n in os.listdir(out_dir) if n.startswith(stem + ".") and n[len(stem) + 1:].isdigit())
  if not parts:
    return None
  if [int(p[len(stem) + 1:]) for p in parts] != list(range(len(parts))):
    raise ValueError(f"{out_dir}: parts of {stem} missing ({parts})")
  blob = b""
  for p in parts:
    with open(os.path.join(out_dir, p), "rb") as f:
      blob += f.read()
  return blob


def extract(blob: bytes, dest: str) -> None:
  """Unpacks a tar into dest, refusing absolute paths, '..' and anything but files and folders."""
  with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
    for m in tar.getmembers():
      if m.name.startswith("/") or ".." in m.name.split("/") or not (m.isfile() or m.isdir()):
        raise ValueError(f"refusing tar member {m.name!r}")
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.12: no links, no absolute paths
      tar.extractall(dest, filter="data")
    else:
      tar.extractall(dest)
