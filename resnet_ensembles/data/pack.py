"""A CIFAR-10 image folder packed into one compressed file (`*.cifarpack`), read like the folder.

`pack_folder(root, out)` stores the original encoded image files (JPEG/PNG bytes, unchanged) of
`<root>/<split>/<class>/*` in one file; `read_pack_split(path, split)` decodes them exactly as
`data.load_folder_split` decodes the folder (same listing order, same PIL decode), so the arrays are
bit-identical. `data.load_cifar10` reads a pack wherever it accepts a folder (config.data.folder or
CIFAR10_DIR naming a `*.cifarpack` file, or any regular file).

Format version 1 (all integers little-endian):

  bytes 0..7    MAGIC b"CIFARPAK"
  bytes 8..11   uint32 format version (1)
  bytes 12..19  uint64 H: length of the header
  next H bytes  header: UTF-8 JSON, xz-compressed (60,000 file names would not be small otherwise):
                {"format", "version", "description", "compression": {"codec": "xz", "preset"},
                 "splits": {split: {"classes", "counts", "files" (relative "<class>/<name>", in order),
                                    "num_images", "raw_size", "sha256", "stream_offset", "stream_size"}}}
  then          one independent xz stream per split, at stream_offset (relative to the end of the
                header), stream_size bytes long. Decompressed it holds int64 offsets [N + 1], int32
                labels [N], then the N image files' bytes concatenated; image i is
                bytes[offsets[i]:offsets[i + 1]]. "sha256" and "raw_size" are of those concatenated
                image bytes.

One stream per split lets a reader decompress only the split it needs. The xz preset is 0: measured on
the CIFAR-10 JPEG q75 copy (55.3 MB of JPEG bytes) preset 0 gives 18.15 MB in 5.3 s, preset 6 (the xz
default) 18.06 MB in 15 s (0.5% smaller, 3x slower); decompression takes ~1.5 s at either preset.
The JPEG entropy-coded data itself is incompressible; what xz removes is the ~620 header bytes that
every 920-byte file repeats.

Only numpy, PIL and the standard library are imported (the folder's listing and decoding are
`data.folder`'s, shared with the folder loader), so a machine without JAX, TFDS or ml_collections can read a pack.
"""
from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import struct
from typing import Optional

import numpy as np

from resnet_ensembles.data.folder import (CIFAR10_CLASSES, METADATA_FILE, cache_dir_or_default,  # noqa: F401
                                         decode_checked, describe, list_split)

SUFFIX = ".cifarpack"
MAGIC = b"CIFARPAK"
VERSION = 1
PRESET = 0
SPLITS = ("train", "test")
_PREFIX = struct.Struct("<8sIQ")  # magic, version, header length

Split = tuple[np.ndarray, np.ndarray]


def is_pack(path: str) -> bool:
  """True when `path` should be read as a pack: it ends in `.cifarpack` or is a regular file."""
  return path.endswith(SUFFIX) or os.path.isfile(path)


def pack_folder(root: str, out_path: str, description: Optional[str] = None,
                splits: tuple[str, ...] = SPLITS, preset: int = PRESET) -> dict:
  """Writes `<root>/<split>/<class>/*` of every split in `splits` to the one file `out_path`.

  `description` defaults to `data.folder.describe(root)`: its dataset.json, a known copy, or its path.
  The output depends only on the files' names and bytes (no timestamps), so packing again gives the
  same file. Returns the header (without the file lists) plus "file_size".
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f"CIFAR-10 folder not found: {root}")
  header = {"format": "cifarpack", "version": VERSION,
            "description": description or describe(root),
            "compression": {"codec": "xz", "preset": preset}, "splits": {}}
  streams, offset = [], 0
  for split in splits:
    files, labels = list_split(root, split)
    chunks = []
    for rel in files:
      with open(os.path.join(root, split, rel), "rb") as f:
        chunks.append(f.read())
    raw = b"".join(chunks)
    offsets = np.zeros(len(chunks) + 1, np.int64)
    np.cumsum([len(c) for c in chunks], out=offsets[1:])
    payload = offsets.astype("<i8").tobytes() + np.asarray(labels, "<i4").tobytes() + raw
    stream = lzma.compress(payload, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=preset)
    header["splits"][split] = {
        "classes": list(CIFAR10_CLASSES), "counts": np.bincount(labels, minlength=10).tolist(),
        "files": files, "num_images": len(files), "raw_size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(), "stream_offset": offset, "stream_size": len(stream)}
    streams.append(stream)
    offset += len(stream)
  head = lzma.compress(json.dumps(header, sort_keys=True).encode(), preset=9)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  tmp = f"{out_path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(_PREFIX.pack(MAGIC, VERSION, len(head)))
    f.write(head)
    for s in streams:
      f.write(s)
  os.replace(tmp, out_path)
  summary = _without_files(header)
  summary["file_size"] = os.path.getsize(out_path)
  return summary


def _without_files(header: dict) -> dict:
  out = dict(header)
  out["splits"] = {k: {kk: vv for kk, vv in v.items() if kk != "files"} for k, v in header["splits"].items()}
  return out


def _parse(path: str, blob: bytes) -> tuple[dict, int]:
  """(header, offset of the first stream) of the pack bytes `blob`; one-line ValueErrors."""
  if len(blob) < _PREFIX.size or not blob.startswith(MAGIC):
    raise ValueError(f"{path} is not a CIFAR-10 pack file (no {MAGIC.decode()} magic); "
                     f"expected a file written by `python -m experiments.pack_cifar10`")
  _, version, head_len = _PREFIX.unpack_from(blob)
  if version != VERSION:
    raise ValueError(f"{path} is a CIFAR-10 pack of format version {version}; this code reads version "
                     f"{VERSION} (repack it, or use the code version that wrote it)")
  start = _PREFIX.size + head_len
  if len(blob) < start:
    raise ValueError(f"{path} is truncated: {len(blob)} bytes, its header alone needs {start}")
  try:
    header = json.loads(lzma.decompress(blob[_PREFIX.size:start], format=lzma.FORMAT_XZ))
  except (lzma.LZMAError, EOFError, ValueError) as e:
    raise ValueError(f"{path} has a corrupt header ({type(e).__name__}: {e})") from None
  return header, start


def read_pack_info(path: str) -> dict:
  """The pack's header (description, splits with class names, counts, file names, checksums)."""
  with open(path, "rb") as f:
    blob = f.read()
  return _parse(path, blob)[0]


def _read(path: str) -> bytes:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"CIFAR-10 pack file not found: {path}")
  with open(path, "rb") as f:
    return f.read()


def _cache_file(cache_dir: Optional[str], split: str, pack_sha: str) -> str:
  return os.path.join(cache_dir_or_default(cache_dir), f"cifar10pack_{split}_{pack_sha[:16]}.npz")


def _decode_split(path: str, blob: bytes, split: str) -> Split:
  header, start = _parse(path, blob)
  if split not in header["splits"]:
    raise ValueError(f"{path} holds splits {sorted(header['splits'])}, not {split!r}")
  meta = header["splits"][split]
  lo, hi = start + meta["stream_offset"], start + meta["stream_offset"] + meta["stream_size"]
  if len(blob) < hi:
    raise ValueError(f"{path} is truncated: {len(blob)} bytes, its {split} split ends at byte {hi}")
  try:
    payload = lzma.decompress(blob[lo:hi], format=lzma.FORMAT_XZ)
  except (lzma.LZMAError, EOFError) as e:
    raise ValueError(f"{path} has a corrupt {split} payload ({type(e).__name__}: {e})") from None
  n = meta["num_images"]
  table = 8 * (n + 1) + 4 * n
  if len(payload) != table + meta["raw_size"]:
    raise ValueError(f"{path} has a corrupt {split} payload: {len(payload)} bytes, "
                     f"expected {table + meta['raw_size']}")
  offsets = np.frombuffer(payload, "<i8", n + 1).astype(np.int64)
  labels = np.frombuffer(payload, "<i4", n, offset=8 * (n + 1)).astype(np.int32)
  raw = memoryview(payload)[table:]
  if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
    raise ValueError(f"{path}: checksum mismatch in the {split} split (sha256 of its image bytes differs "
                     f"from the header's); the file is damaged")
  if (offsets[0] != 0 or offsets[-1] != len(raw) or np.any(np.diff(offsets) <= 0) or np.any(labels < 0)
      or np.bincount(labels, minlength=10).tolist() != meta["counts"]):
    raise ValueError(f"{path} has a corrupt {split} index (offsets or labels disagree with the header)")
  bounds, names = offsets.tolist(), meta["files"]
  images = np.stack([decode_checked(io.BytesIO(raw[bounds[i]:bounds[i + 1]]), f"{path}: {split}/{names[i]}")
                     for i in range(n)])
  return images, labels


def read_pack_split(path: str, split: str, cache_dir: Optional[str] = None) -> Split:
  """(images uint8 [N, 32, 32, 3], labels int32 [N]) of `split`, identical to `data.load_folder_split`
  of the packed folder. Decoded once, then cached as an .npz keyed by the pack file's sha256."""
  blob = _read(path)
  cache = _cache_file(cache_dir, split, hashlib.sha256(blob).hexdigest())
  if os.path.exists(cache):
    with np.load(cache) as z:
      return z["images"], z["labels"]
  images, labels = _decode_split(path, blob, split)
  os.makedirs(os.path.dirname(cache), exist_ok=True)
  tmp = cache + f".tmp{os.getpid()}.npz"
  np.savez(tmp, images=images, labels=labels)
  os.replace(tmp, cache)
  return images, labels


def load_pack(path: str, cache_dir: Optional[str] = None) -> dict[str, Split]:
  """Both splits, as `data.load_cifar10` returns them: {"train": (x, y), "test": (x, y)}."""
  return {split: read_pack_split(path, split, cache_dir) for split in SPLITS}
