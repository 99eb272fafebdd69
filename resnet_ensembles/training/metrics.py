"""Metrics as JSON lines + TensorBoard (tensorboardX when installed), and terminal progress with ETA."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Sequence

import jax
import numpy as np
from absl import logging

from resnet_ensembles.utils import logs


class MetricWriter:
  """Appends {"step", "<prefix>/<name>": value} lines to workdir/metrics.jsonl.

  On resume, lines written after the restored step (work lost with the stop) are dropped first,
  so the file always describes the run that the checkpoint continues."""

  def __init__(self, workdir: str, resume_step: int = 0, enabled: bool = True):
    self.enabled = enabled and jax.process_index() == 0
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    self.previous_wall_s = 0.0  # training wall time of earlier processes of this run
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(self.path):
      with open(self.path) as f:
        kept = [l for l in f if l.strip() and json.loads(l)["step"] <= resume_step]
      walls = [json.loads(l).get("train/wall_s", 0.0) for l in kept]
      self.previous_wall_s = max(walls, default=0.0)
      with open(self.path, "w") as f:
        f.writelines(kept)
    try:
      from tensorboardX import SummaryWriter  # optional on accelerator machines
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1)
    except ImportError:
      logging.warning("tensorboardX not installed: metrics go to metrics.jsonl only")

  def write(self, step: int, values: dict, prefix: str) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    row.update({f"{prefix}/{k}": float(v) for k, v in values.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(f"{prefix}/{k}", float(v), step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f if l.strip()]


def mean_finite_or_raise(pending: Sequence[dict], first_step: int, last_step: int) -> dict:
  """Averages a window of step metrics; a NaN/inf loss stops the run naming the step range."""
  values = jax.device_get(list(pending))
  out = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
  bad = [first_step + 1 + i for i, v in enumerate(values) if not math.isfinite(float(v["loss"]))]
  if bad:
    raise FloatingPointError(f"training loss became non-finite at step {bad[0]} (window steps {first_step + 1}-"
                             f"{last_step}); the last checkpoint is intact — lower the learning rate or "
                             "check the data")
  return out


class Progress:
  """Images/s and ETA for the terminal (absl logging), measured since this process started."""

  def __init__(self, start_step: int, last_step: int, batch_size: int, enabled: bool = True,
               previous_wall_s: float = 0.0):
    self.start_step, self.last_step, self.batch_size, self.enabled = start_step, last_step, batch_size, enabled
    self.t0 = None
    self.t_start, self.previous_wall_s = time.time(), previous_wall_s

  def update(self, step: int) -> dict:
    now = time.time()
    wall = {"wall_s": self.previous_wall_s + now - self.t_start}  # all processes of this run
    if self.t0 is None:  # the first window includes compilation: measure speed after it
      self.t0, self.s0 = now, step
      if self.enabled:
        logging.info("step %d/%d (compiled)", step, self.last_step)
      return wall
    rate = (step - self.s0) / max(now - self.t0, 1e-9)
    eta = (self.last_step - step) / max(rate, 1e-9)
    if self.enabled:
      logging.info("step %d/%d  %.1f img/s  ETA %s", step, self.last_step, rate * self.batch_size,
                   logs.duration(eta))
    return {"images_per_sec": rate * self.batch_size, **wall}
