"""Orbax checkpoints of a run, and `load_trained` for experiments (a workdir or an exported folder).

Loading a trained network needs only `models.from_config`: nothing here imports a trainer."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization, traverse_util

from resnet_ensembles import models

CONFIG_FILE = "config.json"
EXPORT_FILE = "variables.msgpack"


def _model_fields(config) -> dict:
  return json.loads(config.model.to_json()) if hasattr(config.model, "to_json") else dict(config.model)


class Checkpointer:
  """Wraps `ocp.CheckpointManager` in workdir/checkpoints; writes workdir/config.json once.

  A rerun of the same command resumes; a rerun with a different network in the same workdir is an
  error (before anything is overwritten)."""

  def __init__(self, workdir: str, config, keep: int = 2):
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
      with open(path) as f:
        saved = json.load(f)
      if saved.get("model") != _model_fields(config):
        raise ValueError(f"{workdir} holds a run of model {saved.get('model')}, not {_model_fields(config)}; "
                         "use another --workdir")
    if jax.process_index() == 0:  # temp file + rename: other processes never read half a file
      tmp = f"{path}.tmp{os.getpid()}"
      with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2))
      os.replace(tmp, path)
    self.manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def restore_or(self, state):
    step = self.manager.latest_step()
    if step is None:
      return state
    target = serialization.to_state_dict(state)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
    return serialization.from_state_dict(state, restored)

  def save(self, step: int, state) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(serialization.to_state_dict(state)))

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def read_config(path: str) -> ml_collections.ConfigDict:
  with open(os.path.join(path, CONFIG_FILE)) as f:
    return ml_collections.ConfigDict(json.load(f))


def export_variables(variables, config, out_dir: str, extra: dict | None = None) -> str:
  """Writes params + BatchNorm statistics (msgpack) and the config: small enough to commit."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, EXPORT_FILE), "wb") as f:
    f.write(serialization.msgpack_serialize(jax.device_get(variables)))
  cfg = json.loads(config.to_json_best_effort())
  cfg.update(extra or {})
  with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
    json.dump(cfg, f, indent=2)
  return out_dir


def fingerprint(variables) -> str:
  """16 hex digits of a sha256 over every array (name, dtype, shape, bytes; names sorted): whether two
  results studied the same trained network, whichever way (workdir or export) it was loaded."""
  flat = traverse_util.flatten_dict(jax.device_get(dict(variables)), sep="/")
  h = hashlib.sha256()
  for name in sorted(flat):
    a = np.ascontiguousarray(flat[name])
    h.update(f"{name}:{a.dtype}:{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


def load_trained(path: str) -> tuple[Any, dict, ml_collections.ConfigDict]:
  """(model, {"params", "batch_stats"}, config) from a training workdir or an exported folder."""
  if not os.path.exists(os.path.join(path, CONFIG_FILE)):
    raise FileNotFoundError(f"{path} is not a trained run: no {CONFIG_FILE} (expected a training workdir "
                            f"or a folder written by export_variables)")
  config = read_config(path)
  model = models.from_config(config)
  exported = os.path.join(path, EXPORT_FILE)
  if os.path.exists(exported):
    with open(exported, "rb") as f:
      variables = serialization.msgpack_restore(f.read())
    return model, jax.tree.map(np.asarray, variables), config
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(path, "checkpoints")))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"{path} has no checkpoint yet")
  restored = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  return model, {"params": restored["params"], "batch_stats": restored["batch_stats"]}, config
