"""Multi-host for real: 2 processes x 2 CPU devices (jax.distributed on 127.0.0.1, gloo collectives)
train, checkpoint, resume, evaluate, run the lesion sweeps and sample path gradients exactly like
1 process x 4 devices."""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from resnet_ensembles.parallel import distributed
from resnet_ensembles.parallel import mesh as sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 420

_WORKER = r"""
import json, os, sys
sys.path.insert(0, %(root)r)
pid, nproc, port, workdir, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
from resnet_ensembles.parallel import distributed
if nproc > 1:
  assert distributed.initialize(coordinator_address="127.0.0.1:" + port, num_processes=nproc, process_id=pid)
import jax, numpy as np
from experiments.configs import cifar10
from resnet_ensembles.lesion import sweep as lesion
from resnet_ensembles.lesion import masks
from resnet_ensembles.training import metrics
from resnet_ensembles.paths import analysis as paths
from resnet_ensembles import models, training as train
assert jax.process_count() == nproc and jax.device_count() == 4, (jax.process_count(), jax.device_count())
assert distributed.agree(jax.process_index() == 0)  # every process takes process 0's decision
rng = np.random.default_rng(0)
split = lambda n: (rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8), rng.integers(0, 10, n).astype(np.int32))
data = {"train": split(128), "test": split(60)}
c = cifar10.get_config("resnet8")
c.batch_size, c.eval_batch_size, c.num_epochs, c.log_every_steps, c.progress = 16, 24, 1, 2, False
c.max_steps = 4
train.train_and_evaluate(c, workdir, data=data)  # stops after 4 steps, checkpointed by all processes
c.max_steps = -1
result = train.train_and_evaluate(c, workdir, data=data)  # restores (multi-host) and finishes the epoch
state = result["state"]
variables = {"params": state.params, "batch_stats": state.batch_stats}
model = models.from_config(c)
deletions = masks.single_deletions(model.layout)[0]
les = lesion.evaluate(model, variables, data["test"], deletions, batch_size=20)
wave = lesion.single_deletion_sweep(model, variables, data["test"], batch_size=20)
images, labels = data["test"]
sampled = paths.sample_path_gradients(model, variables, images, labels, samples_per_length=2, num_batches=2,
                                      batch_size=6, chunk=4)  # 8 routes a batch: 2 per device
exact = paths.exact_decomposition(model, variables, images, labels, num_batches=1, batch_size=6)
if jax.process_index() == 0:
  rows = metrics.read_metrics(workdir)
  json.dump({"losses": [r["train/loss"] for r in rows if "train/loss" in r],
             "evals": [[r["step"], r["eval/test_error"], r["eval/test_loss"]] for r in rows if "eval/test_loss" in r],
             "step": result["step"], "test_loss": result["test_loss"],
             "head": float(np.abs(np.asarray(state.params["head"]["kernel"])).sum()),
             "lesion": np.asarray(les["error"]).tolist(), "wave": np.asarray(wave["error"]).tolist(),
             "paths": sampled["image_mean"] + sampled["block0_std"] + exact["image"]},
            open(out, "w"))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(tmp_path, nproc: int, env: dict) -> list:
  script = tmp_path / "worker.py"
  script.write_text(_WORKER % {"root": ROOT})
  port, workdir, out = str(_free_port()), tmp_path / f"run{nproc}", tmp_path / f"out{nproc}.json"
  logs = [open(tmp_path / f"log{nproc}_{p}.txt", "w") for p in range(nproc)]
  procs = [subprocess.Popen([sys.executable, str(script), str(p), str(nproc), port, str(workdir), str(out)],
                            env=env, cwd=str(tmp_path), stdout=logs[p], stderr=subprocess.STDOUT)
           for p in range(nproc)]
  return [(nproc, procs, logs, out)]


def _wait(runs, deadline: float) -> dict:
  """Waits for every process; on failure or timeout kills the ones still running and shows the logs."""
  results = {}
  try:
    for nproc, procs, logs, out in runs:
      for p in procs:
        rc = p.wait(timeout=max(1.0, deadline - time.time()))
        if rc != 0:
          text = "\n".join(open(l.name).read()[-3000:] for l in logs)
          raise AssertionError(f"{nproc}-process run failed (rc {rc}):\n{text}")
      results[nproc] = json.load(open(out))
  finally:
    for _, procs, logs, _ in runs:
      for p in procs:
        if p.poll() is None:
          p.kill()
          p.wait()
      for l in logs:
        l.close()
  return results


def test_two_processes_match_one_process(tmp_path, fake_devices_env):
  runs = _launch(tmp_path, 1, fake_devices_env(4)) + _launch(tmp_path, 2, fake_devices_env(2))
  res = _wait(runs, time.time() + TIMEOUT_S)
  one, two = res[1], res[2]
  assert one["step"] == two["step"] == 8 and len(one["losses"]) == 4
  np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
  np.testing.assert_allclose(np.array(two["evals"]), np.array(one["evals"]), rtol=1e-5)
  np.testing.assert_allclose(two["head"], one["head"], rtol=1e-5)
  np.testing.assert_allclose(two["wave"], one["wave"], atol=1e-9)
  np.testing.assert_allclose(one["wave"], one["lesion"], atol=1e-9)
  np.testing.assert_allclose(two["lesion"], one["lesion"], atol=1e-9)  # masks spread over both processes
  # Routes spread over both processes. The two trainings agree to ~1e-5 (above), and gradients amplify that:
  # the mean gradient per length and the exact decomposition agree to ~2e-4 of the curve's scale; the
  # spread over samples at block 0 (a standard deviation of 4 nearly equal gradients, 1/300 of the curve's
  # scale at length 3) moved by 6% on an AMD EPYC CPU (2026-12, the same failure at the previous commit), so
  # it is checked to 10%; the means keep the tight tolerance.
  paths = lambda r: np.asarray(r["paths"]).reshape(3, -1)  # image_mean, block0_std, exact image
  means, spread = [0, 2], 1
  np.testing.assert_allclose(paths(two)[means], paths(one)[means], rtol=1e-4,
                             atol=2e-4 * np.max(np.abs(paths(one)[means])))
  np.testing.assert_allclose(paths(two)[spread], paths(one)[spread], rtol=0.1)
  # Both processes wrote the same checkpoint directory; only process 0 wrote metrics and starts (a second
  # writer would double every line).
  assert sorted(os.listdir(tmp_path / "run2" / "checkpoints")) == ["4", "8"]
  for name in ("metrics.jsonl", "starts.jsonl"):
    lines = {run: open(tmp_path / run / name).read().splitlines() for run in ("run1", "run2")}
    assert len(lines["run2"]) == len(lines["run1"]) > 0, name


def test_initialize_skips_single_process_and_rejects_bad_input(monkeypatch):
  for key in ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS",
              "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(key, raising=False)
  assert distributed.initialize() is False
  assert distributed.initialize(num_processes=1) is False
  assert distributed.multiprocess_env_detected({"SLURM_NTASKS": "8"})
  assert distributed.multiprocess_env_detected({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"})
  assert not distributed.multiprocess_env_detected({"TPU_WORKER_HOSTNAMES": "localhost", "SLURM_NTASKS": "1"})
  with pytest.raises(ValueError, match="mode must be one of"):
    distributed.initialize(mode="sometimes")
  with pytest.raises(ValueError, match="process_id must be in"):
    distributed.initialize(coordinator_address="127.0.0.1:1", num_processes=2, process_id=2)
  with pytest.raises(ValueError, match="contradicts"):
    distributed.initialize(mode="never", num_processes=2)


def test_one_process_holds_every_row():
  mesh = sharding.data_mesh()
  assert sharding.process_rows(mesh, 4 * mesh.size) == slice(0, 4 * mesh.size)
  batch = {"x": np.arange(2 * mesh.size)}
  np.testing.assert_array_equal(sharding.shard_host_batch(batch, mesh)["x"], batch["x"])
