"""The restricted unpickler behind `torch_reader`: a pickle can call any global it names, so this one admits
only the few names a state dict uses (ordered dicts, tensor rebuilds, storage types), each mapped to a stand-in
written here; anything else is refused before it is looked up. Tensors come out as placeholders that
`resolve` turns into numpy arrays once the format's reader has filled in the storages' bytes.
"""
from __future__ import annotations

import collections
import pickle
from typing import Any, BinaryIO

import numpy as np

_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                   "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class TorchFileError(ValueError):
  """A file this reader will not (or cannot) read (one line naming the file); `torch_reader.load` raises it as
  a plain ValueError, after telling it apart from pickle's own errors."""


class _StorageType:
  def __init__(self, name: str):
    self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


class StorageRef:
  """A storage named by a persistent id; `data` (1-D numpy) is filled once the bytes are read."""
  def __init__(self, key: str, dtype: np.dtype, numel: int, view: tuple | None):
    self.key, self.dtype, self.numel, self.view, self.data = key, dtype, numel, view, None


class _TensorRef:
  def __init__(self, storage: StorageRef, offset: int, size: tuple, stride: tuple):
    self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
  if not isinstance(storage, StorageRef):
    raise TorchFileError(f"a tensor's storage is {type(storage).__name__}, not a storage")
  return _TensorRef(storage, int(storage_offset), size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
  del requires_grad, backward_hooks, metadata
  return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


_ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES}}


class _Unpickler(pickle.Unpickler):
  def __init__(self, f: BinaryIO, path: str, storages: dict[str, StorageRef]):
    super().__init__(f)
    self.path, self.storages = path, storages

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in _ALLOWED:
      raise TorchFileError(f"refused to unpickle {module}.{name} in {self.path}: only tensors, storages "
                           "and ordered dicts are allowed")
    return _ALLOWED[(module, name)]

  def persistent_load(self, pid: Any) -> StorageRef:
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)):
      raise TorchFileError(f"{self.path}: unsupported persistent id {str(pid)[:80]} (only storages are read)")
    _, kind, key, _location, numel = pid[:5]
    view = pid[5] if len(pid) == 6 else None
    key = str(key)
    if key not in self.storages:
      self.storages[key] = StorageRef(key, kind.dtype, int(numel), None)
    root = self.storages[key]
    if view is None:
      return root
    view_key, offset, view_numel = view  # legacy only: a slice of the root storage
    return StorageRef(str(view_key), root.dtype, int(view_numel), (root, int(offset)))


def load_pickle(f: BinaryIO, path: str, storages: dict) -> Any:
  try:
    return _Unpickler(f, path, storages).load()
  except TorchFileError:
    raise
  except Exception as e:  # truncated or not a pickle at all
    raise TorchFileError(f"{path} is not a torch.save file ({type(e).__name__}: {str(e)[:80]})") from None


def resolve(obj: Any, path: str) -> Any:
  """Replaces every tensor placeholder in dicts/lists/tuples by its numpy array."""
  if isinstance(obj, _TensorRef):
    return _to_array(obj, path)
  if isinstance(obj, dict):
    out = type(obj)()
    for k, v in obj.items():
      out[k] = resolve(v, path)
    return out
  if isinstance(obj, (list, tuple)):
    return type(obj)(resolve(v, path) for v in obj)
  if isinstance(obj, StorageRef):
    return _storage_data(obj, path).copy()
  return obj


def _storage_data(ref: StorageRef, path: str) -> np.ndarray:
  if ref.view is not None:
    root, offset = ref.view
    data = _storage_data(root, path)[offset:offset + ref.numel]
  else:
    data = ref.data
  if data is None or len(data) < ref.numel:
    raise TorchFileError(f"{path}: storage {ref.key} holds {0 if data is None else len(data)} of "
                         f"{ref.numel} elements")
  return data


def _to_array(t: _TensorRef, path: str) -> np.ndarray:
  """A contiguous copy of the strided view; bounds checked so no read leaves the storage."""
  data = _storage_data(t.storage, path)
  if len(t.size) != len(t.stride) or any(int(s) < 0 for s in t.size + t.stride) or t.offset < 0:
    raise TorchFileError(f"{path}: bad tensor geometry size {t.size} stride {t.stride} offset {t.offset}")
  if 0 in t.size:
    return np.zeros(t.size, data.dtype)
  last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
  if last >= len(data):
    raise TorchFileError(f"{path}: tensor of size {t.size} stride {t.stride} offset {t.offset} reads past "
                         f"its storage of {len(data)} elements")
  base = data[t.offset:]
  strides = tuple(int(s) * data.itemsize for s in t.stride)
  return np.array(np.lib.stride_tricks.as_strided(base, t.size, strides, writeable=False), order="C")
