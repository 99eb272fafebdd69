"""Reads `torch.save` state dicts with numpy alone: no torch import, and no code from the file runs.

Both layouts are read: the legacy stream of PyTorch < 1.6 (magic number, protocol, system info, the main
pickle, the pickled list of storage keys, then each storage as an int64 element count and its raw bytes)
and the zip archive of PyTorch >= 1.6 (`<archive>/data.pkl`, storages in `<archive>/data/<key>`).
A pickle can call any global it names, so the unpickler (`torch_pickle`) admits only the few names a state
dict uses and maps each to a stand-in written there; anything else is refused before it is looked up.
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

from resnet_ensembles.store.torch_pickle import StorageRef, TorchFileError, load_pickle, resolve

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
def _read_legacy(f: BinaryIO, path: str) -> Any:
  if load_pickle(f, path, {}) != LEGACY_MAGIC:
    raise TorchFileError(f"{path} is not a torch.save file (no torch magic number)")
  protocol = load_pickle(f, path, {})
  if protocol != LEGACY_PROTOCOL:
    raise TorchFileError(f"{path}: unsupported legacy torch.save protocol {protocol!r}")
  info = load_pickle(f, path, {})
  if isinstance(info, dict) and not info.get("little_endian", True):
    raise TorchFileError(f"{path} was written on a big-endian machine (not supported)")
  storages: dict[str, StorageRef] = {}
  result = load_pickle(f, path, storages)
  keys = load_pickle(f, path, {})
  if not isinstance(keys, list):
    raise TorchFileError(f"{path}: expected the list of storage keys after the main pickle")
  for key in keys:
    ref = storages.get(str(key))
    if ref is None:
      raise TorchFileError(f"{path}: storage {key} has data but no tensor names it (its type is unknown)")
    head = f.read(8)
    if len(head) < 8:
      raise TorchFileError(f"{path} is truncated (in storage {key})")
    (numel,) = struct.unpack("<q", head)
    raw = f.read(numel * ref.dtype.itemsize)
    if numel < 0 or len(raw) < numel * ref.dtype.itemsize:
      raise TorchFileError(f"{path} is truncated (in storage {key})")
    ref.data = np.frombuffer(raw, ref.dtype.newbyteorder("<"))
  return resolve(result, path)


def _read_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as z:
    names = z.namelist()
    pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
      raise TorchFileError(f"{path} is a zip file but not a torch.save archive (no <archive>/data.pkl)")
    prefix = pkls[0][: -len("data.pkl")]
    order = "<"
    if prefix + "byteorder" in names and z.read(prefix + "byteorder").strip() == b"big":
      order = ">"
    storages: dict[str, StorageRef] = {}
    result = load_pickle(io.BytesIO(z.read(pkls[0])), path, storages)
    for key, ref in storages.items():
      name = f"{prefix}data/{key}"
      if name not in names:
        raise TorchFileError(f"{path}: storage {key} is missing from the archive ({name})")
      raw = z.read(name)
      data = np.frombuffer(raw[: len(raw) // ref.dtype.itemsize * ref.dtype.itemsize],
                           ref.dtype.newbyteorder(order))
      ref.data = data.astype(ref.dtype) if order == ">" else data
  return resolve(result, path)


def file_format(path: str) -> str:
  """'zip' (torch >= 1.6) or 'legacy' (anything else is tried as the legacy stream)."""
  return "zip" if zipfile.is_zipfile(path) else "legacy"


def load(path: str) -> Any:
  """The object `torch.save` stored (e.g. a dict holding a state dict), tensors as numpy arrays."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no such file: {path}")
  try:
    if file_format(path) == "zip":
      return _read_zip(path)
    with open(path, "rb") as f:
      return _read_legacy(f, path)
  except TorchFileError as e:  # callers see a plain ValueError with the one line
    raise ValueError(str(e)) from None
  except RecursionError:
    raise ValueError(f"{path}: objects nested too deeply to be a state dict") from None
