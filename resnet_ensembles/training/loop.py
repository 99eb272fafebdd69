"""The training loop every dataset shares (`fit`): restore, step, log, evaluate, checkpoint, stop cleanly.

A SIGTERM (a scheduler's preemption notice, a job's time limit, or a plain `kill`) stops at the next step
with a checkpoint, so a rerun of the same command loses nothing.
"""
from __future__ import annotations

import functools
import signal
import threading
from typing import Callable, Iterator

import jax
from absl import logging

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.models import samplers
from resnet_ensembles.parallel.mesh import replicate
from resnet_ensembles.store import checkpoints, lock
from resnet_ensembles.training import metrics as metrics_lib, schedules, steps
from resnet_ensembles.utils import provenance


class Preemption:
  """SIGTERM (a scheduler's preemption notice, a job's time limit, or a plain `kill`) stops training at the
  next step with a checkpoint, so a rerun loses nothing. Several processes agree on that step through
  JAX's preemption sync point (orbax `reached_preemption`); one process watches for the signal itself.
  A notice that arrives too late to act on (after the last step) is re-delivered on `close`."""

  def __init__(self, manager):
    self.manager, self.requested, self.acted, self.previous = manager, False, False, None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(signal.SIGTERM, self._notice)

  def _notice(self, signum, frame) -> None:
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      try:
        return self.manager.reached_preemption(step)
      except RuntimeError:  # the preemption service is off: nothing to watch
        return False
    return self.requested

  def close(self) -> None:
    if self.previous is None:
      return
    signal.signal(signal.SIGTERM, self.previous)
    if self.requested and not self.acted:
      signal.raise_signal(signal.SIGTERM)


def fit(config, workdir: str, *, model, mesh, steps_per_epoch: int, batches: Callable[[int], Iterator[dict]],
        evaluate_fn: Callable[[dict], dict], preprocess: Callable = data_lib.augment, image_size: int = 32) -> dict:
  """The loop every dataset shares: restore, step, log, evaluate and checkpoint every configured epoch.

  `batches(start_step)` yields the global batches (sharded over `mesh`) from `start_step` on;
  `evaluate_fn(variables)` returns a dict with at least "test_error". Holds `workdir`'s lock throughout
  (re-entered when `training.train_and_evaluate` already holds it): a second run there fails at once."""
  with lock.hold(workdir):
    return _fit(config, workdir, model=model, mesh=mesh, steps_per_epoch=steps_per_epoch, batches=batches,
                evaluate_fn=evaluate_fn, preprocess=preprocess, image_size=image_size)


def _fit(config, workdir: str, *, model, mesh, steps_per_epoch: int, batches: Callable[[int], Iterator[dict]],
         evaluate_fn: Callable[[dict], dict], preprocess: Callable, image_size: int) -> dict:
  total_steps = config.num_epochs * steps_per_epoch
  lr_fn = schedules.learning_rate_fn(config, steps_per_epoch)
  tx = schedules.make_optimizer(config, lr_fn)
  sampler = samplers.make_sampler(config.train_mask, model.layout, config.batch_size)
  steps.check_microbatches(model, config.get("microbatches", 1), config.batch_size, sampler)
  ckpt = checkpoints.Checkpointer(workdir, config, keep=config.keep_checkpoints)
  # Replicated first, so that orbax restores straight into the global (multi-host) layout.
  state = replicate(steps.create_state(config, model, tx, jax.random.PRNGKey(config.seed), image_size), mesh)
  state = ckpt.restore_or(state)
  start_step = int(state.step)
  if start_step == 0 and config.get("init_from"):
    state = replicate(steps.init_from_trained(state, config, model, tx), mesh)
  writer = metrics_lib.MetricWriter(workdir, resume_step=start_step)
  if start_step:
    logging.info("Resumed from step %d (epoch %d) in %s", start_step, start_step // steps_per_epoch, workdir)
  if jax.process_index() == 0:
    provenance.record_start(workdir, start_step)

  step_fn = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, sampler=sampler, preprocess=preprocess,
                                      label_smoothing=config.get("label_smoothing", 0.0),
                                      microbatches=config.get("microbatches", 1)), donate_argnums=0)
  key = jax.random.PRNGKey(config.seed + 1)
  last_steps = total_steps if config.max_steps < 0 else min(total_steps, config.max_steps)
  progress = metrics_lib.Progress(start_step, last_steps, config.batch_size, enabled=config.progress,
                                  previous_wall_s=writer.previous_wall_s)
  pending, result, window_start = [], {}, start_step
  variables_of = lambda state: {"params": state.params, "batch_stats": state.batch_stats}
  preemption = Preemption(ckpt.manager)
  try:
    in_flight = None
    for step, batch in zip(range(start_step, last_steps), batches(start_step)):
      state, m = step_fn(state, batch, key)
      if in_flight is not None:  # at most two steps queued: a stop request is acted on within a step
        jax.block_until_ready(in_flight)
      in_flight = m
      pending.append(m)
      done = step + 1
      preempted = preemption.reached(done) and done < last_steps  # asked every step, on every process
      end_of_epoch = done % steps_per_epoch == 0
      if done % config.log_every_steps == 0 or end_of_epoch or done == last_steps or preempted:
        summary = metrics_lib.mean_finite_or_raise(pending, window_start, done)
        summary["lr"] = float(lr_fn(done - 1))
        summary.update(progress.update(done))
        writer.write(done, summary, prefix="train")
        pending, window_start = [], done
      if (end_of_epoch and (done // steps_per_epoch) % config.eval_every_epochs == 0) or done == last_steps:
        result = evaluate_fn(variables_of(state))
        result["epoch"] = done / steps_per_epoch
        writer.write(done, result, prefix="eval")
        logging.info("epoch %.2f  test error %.2f%%", result["epoch"], 100 * result["test_error"])
      if ((end_of_epoch and (done // steps_per_epoch) % config.checkpoint_every_epochs == 0)
          or done == last_steps or preempted):
        ckpt.save(done, state)
      if preempted:
        logging.warning("SIGTERM: stopped at step %d with a checkpoint; rerun the same command to resume", done)
        preemption.acted, result = True, {"preempted": True}
        break
  finally:
    ckpt.close()  # waits for the last checkpoint to be written
    writer.close()
    preemption.close()
  if not result:  # nothing left to train: report the restored network
    result = evaluate_fn(variables_of(state))
  result["step"] = int(state.step)
  result["state"] = state
  return result
