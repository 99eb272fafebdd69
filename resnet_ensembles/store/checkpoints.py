"""Orbax checkpoints of a run, and `load_trained` for experiments (a workdir or an exported folder).

Loading a trained network needs only `models.from_config`: nothing here imports a trainer.

A damaged checkpoint (a truncated data file, a half-copied folder) must not end a run that keeps an
older good one: both readers try the kept steps newest first (`restore_readable`), warn in one line
about each that cannot be read, and fail in one line only when none can. Nothing is ever deleted: a
training run that resumes from an older step moves the damaged newer ones aside to
`checkpoints/damaged_<step>/` (orbax lists only integer-named folders, so it neither restores, counts
against max_to_keep, nor deletes them) and can then save those step numbers again."""
from __future__ import annotations

import collections
import hashlib
import json
import os
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import serialization, traverse_util

from resnet_ensembles import models
from resnet_ensembles.parallel import distributed

CONFIG_FILE = "config.json"
EXPORT_FILE = "variables.msgpack"


def _why(e: BaseException) -> str:
  """`Type: first line` of the innermost cause of an exception: orbax wraps TensorStore's precise error
  ("OUT_OF_RANGE: Error reading <array> ...") in a generic one whose message runs on over many lines."""
  while (e.__cause__ or e.__context__) is not None:
    e = e.__cause__ or e.__context__
  lines = str(e).strip().splitlines()
  return f"{type(e).__name__}: {lines[0][:300] if lines else repr(e)}"


def restore_readable(manager: ocp.CheckpointManager, restore: Callable[[int], Any], where: str
                     ) -> tuple[Optional[int], Any, list[int]]:
  """(step, restored, unreadable newer steps) for the newest step of `manager` that `restore(step)` reads;
  (None, None, []) when there is no checkpoint. Each unreadable step is a one-line warning; when none can
  be read, one RuntimeError line names every step tried. Reads only: nothing is moved or deleted here."""
  tried = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return step, restore(step), [s for s, _ in tried]
    except Exception as e:  # noqa: BLE001  (any failure to read is a damaged step; the next is tried)
      tried.append((step, _why(e)))
      logging.warning("%s: checkpoint step %d cannot be read (%s); trying the previous kept step",
                      where, step, tried[-1][1])
  if tried:
    raise RuntimeError(f"{where}: no checkpoint can be read (steps tried: "
                       f"{', '.join(f'{s} ({why})' for s, why in tried)}); nothing was deleted")
  return None, None, []


def _move_aside(directory: str, step: int) -> str:
  """`<directory>/<step>` -> `<directory>/damaged_<step>[_n]/` (never deleted, never listed by orbax)."""
  dest, n = os.path.join(directory, f"damaged_{step}"), 1
  while os.path.exists(dest):
    n += 1
    dest = os.path.join(directory, f"damaged_{step}_{n}")
  os.rename(os.path.join(directory, str(step)), dest)
  return dest


def _model_fields(config) -> dict:
  return json.loads(config.model.to_json()) if hasattr(config.model, "to_json") else dict(config.model)


def _network_fields(model_fields: Optional[dict]) -> Optional[dict]:
  """The fields that say which network a run trains (execution settings such as conv_chunk left out)."""
  return None if model_fields is None else models.network_fields(model_fields)


class Checkpointer:
  """Wraps `ocp.CheckpointManager` in workdir/checkpoints; writes workdir/config.json once.

  A rerun of the same command resumes (from the newest readable step); a rerun with a different network
  in the same workdir is an error (before anything is overwritten)."""

  def __init__(self, workdir: str, config, keep: int = 2):
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
      with open(path) as f:
        saved = json.load(f)
      if _network_fields(saved.get("model")) != _network_fields(_model_fields(config)):
        raise ValueError(f"{workdir} holds a run of model {saved.get('model')}, not {_model_fields(config)}; "
                         "use another --workdir")
    if jax.process_index() == 0:  # temp file + rename: other processes never read half a file
      tmp = f"{path}.tmp{os.getpid()}"
      with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2))
      os.replace(tmp, path)
    self.workdir, self.keep = workdir, keep
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=self.keep,
                                                                                      create=True))

  def restore_or(self, state):
    """`state` restored from the newest readable step (unchanged when there is none). Unreadable newer
    steps are moved aside to checkpoints/damaged_<step>/, so training can save those steps again."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, serialization.to_state_dict(state))
    step, restored, damaged = restore_readable(
        self.manager, lambda s: self.manager.restore(s, args=ocp.args.StandardRestore(abstract)), self.workdir)
    if step is None:
      return state
    if damaged:
      self.manager.close()
      if jax.process_index() == 0:
        for bad in damaged:
          logging.warning("%s: moved the unreadable step %d aside to %s (kept, not deleted); resuming from "
                          "step %d", self.workdir, bad, _move_aside(self.directory, bad), step)
      distributed.barrier("checkpoints_moved_aside")
      self.manager = self._open()  # lists the steps anew: the damaged ones are gone from its view
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
  if "imported_from" in config and not os.path.isdir(os.path.join(path, "checkpoints")):
    raise FileNotFoundError(f"{path} has no {EXPORT_FILE} (imported weights are git-ignored): run "
                            "`python -m experiments.import_torch --all_akamaster` first")
  directory = os.path.abspath(os.path.join(path, "checkpoints"))
  key = _newest_step_key(directory)
  if key in _RECENT and not any(a.is_deleted() for a in jax.tree.leaves(_RECENT[key]) if isinstance(a, jax.Array)):
    _RECENT.move_to_end(key)  # (a training step that donated a remembered array deleted it: then read again)
    return model, jax.tree.map(lambda a: a, _RECENT[key]), config  # new dicts; the arrays are immutable
  manager = ocp.CheckpointManager(directory)
  try:  # the newest readable step; an unreadable one is named in a warning, and left where it is
    step, restored, _ = restore_readable(manager, lambda s: manager.restore(s, args=ocp.args.StandardRestore()), path)
  finally:
    manager.close()
  if step is None:
    raise FileNotFoundError(f"{path} has no checkpoint yet")
  variables = {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}
  if key is not None and key[1] == step:  # remembered only when the newest step was the one read
    _RECENT[key] = variables
    while len(_RECENT) > _RECENT_SIZE:
      _RECENT.popitem(last=False)
  return model, jax.tree.map(lambda a: a, variables), config


# The variables of the last few checkpoints `load_trained` read in this process: a study reads each trained
# network once per sweep (a tiny study ~12 times for 5 networks, ~0.4 s of orbax each on a 2-core x86 CPU).
# Keyed by the step folder's modification time too, so a checkpoint written again under the same step is read
# again.
_RECENT: "collections.OrderedDict[tuple, dict]" = collections.OrderedDict()
_RECENT_SIZE = 4


def _newest_step_key(directory: str) -> Optional[tuple]:
  """(checkpoint folder, newest step, that step folder's mtime in ns), or None without a step."""
  try:
    newest = max((int(d) for d in os.listdir(directory) if d.isdigit()), default=None)
    return None if newest is None else (directory, newest, os.stat(os.path.join(directory, str(newest))).st_mtime_ns)
  except OSError:
    return None
