"""One mesh decision for training, sweeps and path sampling: a 1-D `data` axis over all devices.

The same code runs on one process and on a pod: the mesh spans the devices of every process (ordered
by process, so each process holds a contiguous run of any batch), and a global batch is assembled from
the rows each process supplies (`global_batch`), never copied whole through one host.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def data_mesh(devices=None) -> Mesh:
  if devices is None:
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), ("data",))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Every device gets a copy. On several processes the host values must be equal on all of them."""
  sharding = replicated_spec(mesh)
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)

  def put(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)  # already global: reshard on device
    return jax.device_put(np.asarray(x), sharding)  # host value, the same on every process
  return jax.tree.map(put, tree)


def replicated_spec(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch_spec(mesh: Mesh) -> NamedSharding:
  """Leading axis split over `data` (a batch of images, or a stack of masks)."""
  return NamedSharding(mesh, P("data"))


def process_rows(mesh: Mesh, global_rows: int) -> slice:
  """Rows [start, stop) of a `global_rows` batch sharded over `data` that this process's devices hold."""
  if global_rows % mesh.size:
    raise ValueError(f"a batch of {global_rows} rows does not split over {mesh.size} devices")
  index_map = shard_batch_spec(mesh).addressable_devices_indices_map((global_rows,))
  spans = sorted({(s[0].start or 0, global_rows if s[0].stop is None else s[0].stop) for s in index_map.values()})
  for (_, stop), (start, _) in zip(spans, spans[1:]):
    if stop != start:
      raise ValueError("this process's devices are not contiguous in the mesh; build it with data_mesh()")
  return slice(spans[0][0], spans[-1][1])


def global_batch(local: Any, mesh: Mesh, global_rows: int) -> Any:
  """A batch sharded over `data` from this process's rows (`local`, numpy, rows `process_rows`)."""
  sharding = shard_batch_spec(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
      sharding, np.asarray(x), (global_rows,) + np.shape(x)[1:]), local)


def shard_host_batch(batch: Any, mesh: Mesh) -> Any:
  """A batch that every process holds in full (numpy) -> the global array; each uploads its rows."""
  rows = jax.tree.leaves(batch)[0].shape[0]
  part = process_rows(mesh, rows)
  return global_batch(jax.tree.map(lambda x: np.asarray(x)[part], batch), mesh, rows)
