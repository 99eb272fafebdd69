"""Multi-host start-up: `jax.distributed.initialize` when (and only when) the run spans several processes.

Every experiment main calls `initialize_from_flags(config)` before touching JAX. Precedence: explicit
flags, then `config.distributed` fields, then auto-detection. With nothing given, JAX's own cluster
detection runs only where a multi-process launcher is visible (TPU pod slice, SLURM/Open MPI with more
than one task, or JAX_COORDINATOR_ADDRESS set); a plain single-process run skips initialization, so
laptops and one-host GPU/TPU runs need no flags at all.
"""
from __future__ import annotations

import os
from typing import Optional

import jax
import numpy as np
from absl import flags, logging

MODES = ("auto", "always", "never")
_FLAGS_DEFINED = False


def define_flags() -> None:
  """--distributed, --coordinator_address, --num_processes, --process_id (idempotent)."""
  global _FLAGS_DEFINED
  if _FLAGS_DEFINED:
    return
  _FLAGS_DEFINED = True
  flags.DEFINE_enum("distributed", None, MODES, "auto: initialize jax.distributed on a detected multi-process "
                    "launcher or when any field below is given; always; never. Default: config or auto.")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (default: auto-detect).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (default: auto-detect).")
  flags.DEFINE_integer("process_id", None, "This process's index (default: auto-detect).")


def multiprocess_env_detected(env: Optional[dict] = None) -> bool:
  """True when a launcher that JAX can auto-detect reports more than one process."""
  env = os.environ if env is None else env
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return True
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
  if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return True
  for key in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if env.get(key, "").isdigit() and int(env[key]) > 1:
      return True
  return False


def initialize(mode: str = "auto", coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None, process_id: Optional[int] = None,
               cpu_collectives: Optional[str] = "gloo") -> bool:
  """Calls `jax.distributed.initialize` if `mode` asks for it; True when it did.

  Unset fields (None, "", or negative numbers) are left to JAX's auto-detection. `cpu_collectives`
  enables cross-process collectives for CPU devices (tests, CPU clusters); accelerators ignore it."""
  if mode not in MODES:
    raise ValueError(f"distributed mode must be one of {MODES}, got {mode!r}")
  coordinator_address = coordinator_address or None
  num_processes = num_processes if num_processes is not None and num_processes > 0 else None
  process_id = process_id if process_id is not None and process_id >= 0 else None
  given = coordinator_address is not None or num_processes is not None or process_id is not None
  if mode == "never" or (mode == "auto" and not given and not multiprocess_env_detected()):
    if given:
      raise ValueError("distributed mode 'never' contradicts the coordinator/num_processes/process_id given")
    return False
  if num_processes == 1 and process_id in (None, 0) and coordinator_address is None:
    return False  # explicitly single-process
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def initialize_from_flags(config=None) -> bool:
  """`initialize` with flag values over `config.distributed` fields (when the config has them)."""
  define_flags()
  fields = dict(mode="auto", coordinator_address=None, num_processes=None, process_id=None)
  section = getattr(config, "distributed", None) if config is not None else None
  if section is not None:
    for key in fields:
      if key in section:
        fields[key] = section[key]
  f = flags.FLAGS
  for flag, key in (("distributed", "mode"), ("coordinator_address", "coordinator_address"),
                    ("num_processes", "num_processes"), ("process_id", "process_id")):
    if f[flag].value is not None:
      fields[key] = f[flag].value
  return initialize(**fields)


def barrier(name: str) -> None:
  """All processes reach `name` before any continues (a no-op on one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
  """Process 0's value of `flag` on every process (one process: `flag`), so all take one decision."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.bool_)))


def is_main_process() -> bool:
  return jax.process_index() == 0


def start_main(argv, config=None) -> None:
  """What every absl main does first: refuse stray arguments, set up logging, and start jax.distributed
  (from the flags, over `config.distributed`) before anything touches a device."""
  from absl import app
  from resnet_ensembles.utils.logs import setup_logging
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  setup_logging()
  initialize_from_flags(config)
