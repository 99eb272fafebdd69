"""PyTorch CIFAR ResNets (akamaster/pytorch_resnet_cifar10 layout) as this project's `CifarResNet`.

The source networks are He et al. 2016a ("original") ResNets whose option-A shortcuts pad channels on both
sides and whose inputs get ImageNet statistics, so they become
`CifarResNet(depth, "original", shortcut_pad="both", input_stats="imagenet")`. Every key and shape is
checked before anything is built: a checkpoint that does not fit ends with one line naming the key.
"""
from __future__ import annotations

import os
import re
import shutil
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from resnet_ensembles import models
from resnet_ensembles.store import checkpoints, torch_reader
from resnet_ensembles.utils import provenance

_BLOCK_KEY = re.compile(r"layer([123])\.(\d+)\.")
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
       "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
LICENSE_FILE = "LICENSE"


def build_model(depth: int) -> models.CifarResNet:
  return models.CifarResNet(depth, variant="original", shortcut_pad="both", input_stats="imagenet")


def infer_depth(keys) -> int:
  """6n + 2 from the `layerK.i` blocks: each of the three stages must hold the same n."""
  blocks = {(int(m.group(1)), int(m.group(2))) for k in keys if (m := _BLOCK_KEY.search(k))}
  per_stage = [sorted(i for s, i in blocks if s == stage) for stage in (1, 2, 3)]
  n = len(per_stage[0])
  if n == 0 or any(p != list(range(n)) for p in per_stage):
    counts = ", ".join(f"layer{s + 1}: {len(p)}" for s, p in enumerate(per_stage))
    raise ValueError(f"the state dict is not a 3-stage CIFAR ResNet with n blocks per stage ({counts})")
  return 6 * n + 2


def _torch_names(depth: int) -> dict[str, tuple[tuple[str, ...], str]]:
  """torch key -> (flax collection + path, kind) for every tensor the network needs."""
  out = {"conv1.weight": (("params", "stem_conv", "kernel"), "conv")}
  out.update({f"bn1.{t}": ((c, "stem_bn", f), "vector") for t, (c, f) in _BN.items()})
  n = (depth - 2) // 6
  for pos in range(3 * n):
    prefix, block = f"layer{pos // n + 1}.{pos % n}.", f"block_{pos:02d}"
    for j in (1, 2):
      out[f"{prefix}conv{j}.weight"] = (("params", block, f"conv{j}", "kernel"), "conv")
      out.update({f"{prefix}bn{j}.{t}": ((c, block, f"bn{j}", f), "vector") for t, (c, f) in _BN.items()})
  out["linear.weight"] = (("params", "head", "kernel"), "dense")
  out["linear.bias"] = (("params", "head", "bias"), "vector")
  return out


def _to_flax(a: np.ndarray, kind: str) -> np.ndarray:
  if kind == "conv":   # OIHW -> HWIO
    return a.transpose(2, 3, 1, 0)
  if kind == "dense":  # [out, in] -> [in, out]
    return a.T
  return a


def _torch_shape(shape: tuple, kind: str) -> tuple:
  if kind == "conv":
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(reversed(shape)) if kind == "dense" else tuple(shape)


def state_dict_to_variables(state_dict: dict, depth: Optional[int] = None) -> tuple[int, dict]:
  """(depth, {"params", "batch_stats"}) for `build_model(depth)`; `module.` prefixes are stripped and
  `num_batches_tracked` counters ignored."""
  tensors = {}
  for key, value in state_dict.items():
    name = key[len("module."):] if key.startswith("module.") else key
    if not name.endswith("num_batches_tracked"):
      tensors[name] = value
  found = infer_depth(tensors)
  if depth is not None and depth != found:
    raise ValueError(f"the state dict holds a ResNet-{found} ({(found - 2) // 2} blocks), not the "
                     f"requested depth {depth}")
  model = build_model(found)
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  wanted = traverse_util.flatten_dict(jax.tree.map(lambda s: tuple(s.shape), dict(abstract)),
                                      is_leaf=lambda _, v: isinstance(v, tuple))
  names = _torch_names(found)
  if set(wanted) != {path for path, _ in names.values()}:  # the mapping must cover the model exactly
    raise RuntimeError("torch_import's key mapping does not match CifarResNet's variables")
  for key in names:
    if key not in tensors:
      raise ValueError(f"the state dict has no {key!r} (needed by a ResNet-{found})")
  extra = sorted(set(tensors) - set(names))
  if extra:
    raise ValueError(f"the state dict has unexpected key {extra[0]!r}" +
                     (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "") +
                     f"; a ResNet-{found} has no such tensor")
  for key, (path, kind) in names.items():
    a, expect = tensors[key], _torch_shape(wanted[path], kind)
    if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.floating):
      raise ValueError(f"{key!r} is {getattr(a, 'dtype', type(a).__name__)}, not a floating-point tensor")
    if tuple(a.shape) != expect:
      raise ValueError(f"{key!r} has shape {tuple(a.shape)}, expected {expect} for a ResNet-{found}")
  flat = {path: np.ascontiguousarray(_to_flax(tensors[key], kind), np.float32)
          for key, (path, kind) in names.items()}
  return found, traverse_util.unflatten_dict(flat)


def _licence_file(path: str) -> Optional[str]:
  licence = os.path.join(os.path.dirname(os.path.abspath(path)), LICENSE_FILE)
  return licence if os.path.exists(licence) else None


def _licence_note(path: str, licence: Optional[str]) -> str:
  """`licence` (e.g. "BSD 2-clause") with the first line of the LICENSE beside the source, if any."""
  found = _licence_file(path)
  first = ""
  if found:
    with open(found, errors="replace") as f:
      first = next((line.strip() for line in f if line.strip()), "")
  where = f"{first}; {LICENSE_FILE} copied beside these weights" if found else f"no {LICENSE_FILE} beside the source"
  return f"{licence} ({where})" if licence else where


def import_checkpoint(path: str, out_dir: str, make_config: Callable[[int], Any], depth: Optional[int] = None,
                      licence: Optional[str] = None) -> dict[str, Any]:
  """Reads a torch.save checkpoint and writes `out_dir` for `checkpoints.load_trained`; returns a summary.

  `make_config(depth)` gives the run config recorded beside the weights (its `model` must build the network
  this module maps onto: the caller owns configs, the store layer only checks that it does)."""
  obj = torch_reader.load(path)
  state_dict = obj.get("state_dict", obj) if isinstance(obj, dict) else None
  if not isinstance(state_dict, dict):
    raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict (or a dict with 'state_dict')")
  found, variables = state_dict_to_variables(state_dict, depth)
  digest = provenance.sha256(path)
  source = {"file": os.path.basename(path), "sha256": digest, "format": torch_reader.file_format(path),
            "licence": _licence_note(path, licence), "importer_commit": provenance.git_commit()}
  if isinstance(obj.get("best_prec1"), (int, float)):
    source["best_prec1"] = float(obj["best_prec1"])
  config = make_config(found)
  if models.from_config(config) != build_model(found):
    raise ValueError(f"make_config({found}) describes {models.from_config(config)}, not {build_model(found)}")
  checkpoints.export_variables(variables, config, out_dir, {"imported_from": source})
  if _licence_file(path):  # copyfile, not copy: the source may be read-only, a rerun must overwrite it
    shutil.copyfile(_licence_file(path), os.path.join(out_dir, LICENSE_FILE))
  return {"depth": found, "blocks": (found - 2) // 2, "params": models.num_params(variables["params"]),
          "sha256": digest, "out_dir": out_dir}
