"""One mesh decision for training, sweeps and path sampling: a 1-D `data` axis over all devices."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def data_mesh(devices=None) -> Mesh:
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))


def replicate(tree: Any, mesh: Mesh) -> Any:
  return jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batch_spec(mesh: Mesh) -> NamedSharding:
  """Leading axis split over `data` (a batch of images, or a stack of masks)."""
  return NamedSharding(mesh, P("data"))
