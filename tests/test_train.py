import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import cifar10
from resnet_ensembles.store import checkpoints
from resnet_ensembles.data import cifar10 as data
from resnet_ensembles import training as train
from resnet_ensembles.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**kw):
  c = cifar10.get_config("resnet8")
  c.batch_size, c.eval_batch_size, c.num_epochs, c.log_every_steps = 32, 200, 2, 4
  c.progress = False
  for k, v in kw.items():
    setattr(c, k, v)
  return c


@pytest.fixture(scope="module")
def small(cifar):
  return {"train": data.subset(cifar["train"], 256), "test": data.subset(cifar["test"], 200, 1)}


def _losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return [r["train/loss"] for r in rows if "train/loss" in r]


def test_a_few_steps_lower_the_loss(small, tmp_path):
  c = _config(num_epochs=3, learning_rate=0.05)  # 24 steps: 2.38 -> 2.08 on a 2-core x86 CPU
  result = train.train_and_evaluate(c, str(tmp_path), data=small)
  losses = _losses(str(tmp_path))
  assert losses[-1] < losses[0] - 0.2, losses
  assert 0.0 <= result["test_error"] <= 1.0 and result["step"] == 3 * 8


def test_kill_and_resume_matches_uninterrupted(small, uninterrupted, tmp_path):
  full_dir, full = uninterrupted
  # Stop mid-way through epoch 2 (a checkpoint is written at the stop), rerun the same command.
  train.train_and_evaluate(_config(max_steps=11), str(tmp_path / "b"), data=small)
  resumed = train.train_and_evaluate(_config(), str(tmp_path / "b"), data=small)
  assert resumed["step"] == full["step"] == 16
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(resumed["state"])):
    np.testing.assert_array_equal(a, b)
  evals = lambda d: [(r["step"], r["eval/test_error"]) for r in map(json.loads, open(os.path.join(d, "metrics.jsonl")))
                     if "eval/test_error" in r and r["step"] % 8 == 0]
  assert evals(str(full_dir)) == evals(str(tmp_path / "b")) and len(evals(str(full_dir))) == 2
  # A run that already finished restores and reports without training.
  again = train.train_and_evaluate(_config(), str(tmp_path / "b"), data=small)
  assert again["test_error"] == pytest.approx(full["test_error"])


def test_sigterm_checkpoints_and_resume_matches_uninterrupted(small, uninterrupted, tmp_path, monkeypatch):
  """A preemption notice (SIGTERM) mid-epoch stops at the next step with a checkpoint; the rerun ends
  exactly where an uninterrupted run does (logging every step here changes what is logged, not the steps)."""
  import signal
  from resnet_ensembles.training import metrics
  full = uninterrupted[1]
  update = metrics.Progress.update

  def notice_at_step_5(self, step):
    if step == 5:
      signal.raise_signal(signal.SIGTERM)  # delivered to loop.Preemption's handler
    return update(self, step)
  monkeypatch.setattr(metrics.Progress, "update", notice_at_step_5)
  stopped = train.train_and_evaluate(_config(log_every_steps=1), str(tmp_path / "b"), data=small)
  assert stopped["preempted"] and stopped["step"] == 6  # the notice came while step 5 was logged
  assert sorted(os.listdir(tmp_path / "b" / "checkpoints")) == ["6"]
  logged = [r["step"] for r in map(json.loads, open(tmp_path / "b" / "metrics.jsonl")) if "train/loss" in r]
  assert logged == [1, 2, 3, 4, 5, 6]  # the last window is written before stopping
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone after training
  monkeypatch.setattr(metrics.Progress, "update", update)
  resumed = train.train_and_evaluate(_config(log_every_steps=1), str(tmp_path / "b"), data=small)
  assert resumed["step"] == 16 and not resumed.get("preempted")
  from resnet_ensembles.utils import provenance  # each start is on record with its code
  starts = provenance.read_starts(str(tmp_path / "b"))
  assert [s["step"] for s in starts] == [0, 6] and starts[1]["git_commit"] == provenance.git_commit()
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(resumed["state"])):
    np.testing.assert_array_equal(a, b)


def test_a_late_sigterm_is_redelivered():
  """A notice that came too late to act on is not swallowed: close() hands it to the previous handler."""
  import signal
  seen = []
  previous = signal.signal(signal.SIGTERM, lambda *a: seen.append("outer"))
  try:
    p = loop.Preemption(manager=None)
    signal.raise_signal(signal.SIGTERM)
    assert p.reached(1) and seen == []
    p.close()
    assert seen == ["outer"]
    p = loop.Preemption(manager=None)
    signal.raise_signal(signal.SIGTERM)
    p.acted = True  # the loop stopped for it: nothing to re-deliver
    p.close()
    assert seen == ["outer"]
  finally:
    signal.signal(signal.SIGTERM, previous)


def test_workdir_of_another_model_is_refused(small, tmp_path):
  train.train_and_evaluate(_config(num_epochs=1, max_steps=1), str(tmp_path), data=small)
  other = _config()
  other.model.depth = 14
  with pytest.raises(ValueError, match="holds a run of model"):
    train.train_and_evaluate(other, str(tmp_path), data=small)


def test_nan_loss_stops_with_step_range(small, tmp_path):
  with pytest.raises(FloatingPointError, match="non-finite at step 2 "):
    train.train_and_evaluate(_config(learning_rate=float("inf")), str(tmp_path), data=small)


def test_bad_config_fails_before_compiling(tmp_path):
  c = _config()
  c.model.depth = 21
  with pytest.raises(ValueError, match="6n\\+2"):
    train.train_and_evaluate(c, str(tmp_path), data={})
  with pytest.raises(ValueError, match="config arg must look like"):
    cifar10.get_config("resnet")


def test_load_trained_from_workdir_and_export(small, tmp_path):
  result = train.train_and_evaluate(_config(num_epochs=1), str(tmp_path / "run"), data=small)
  model, variables, config = checkpoints.load_trained(str(tmp_path / "run"))
  state = result["state"]
  np.testing.assert_array_equal(variables["params"]["head"]["kernel"], state.params["head"]["kernel"])
  checkpoints.export_variables(variables, config, str(tmp_path / "export"))
  model2, exported, _ = checkpoints.load_trained(str(tmp_path / "export"))
  x = data.normalize(small["test"][0][:8])
  forward = jax.jit(lambda m, v: m.apply(v, x), static_argnums=0)  # one compiled program, not one per operation
  np.testing.assert_array_equal(forward(model, variables), forward(model2, exported))
  assert checkpoints.fingerprint(variables) == checkpoints.fingerprint(exported)  # one network, two ways in
  exported["params"]["head"]["bias"] = exported["params"]["head"]["bias"] + 1e-7
  assert checkpoints.fingerprint(variables) != checkpoints.fingerprint(exported)
  # Read again, the run's checkpoint comes from memory (new dicts: a caller's change stays its own); trained
  # on, the run is read anew: its newest step.
  first = checkpoints.fingerprint(variables)
  variables["params"] = None
  _, again, _ = checkpoints.load_trained(str(tmp_path / "run"))
  assert again["params"] is not None and checkpoints.fingerprint(again) == first
  jax.jit(lambda a: a + 1, donate_argnums=0)(again["params"]["head"]["kernel"])  # as a train step donates
  _, after, _ = checkpoints.load_trained(str(tmp_path / "run"))  # (fine-tuning from this run's checkpoint)
  assert checkpoints.fingerprint(after) == first
  more = train.train_and_evaluate(_config(num_epochs=2), str(tmp_path / "run"), data=small)
  _, trained_on, _ = checkpoints.load_trained(str(tmp_path / "run"))
  np.testing.assert_array_equal(trained_on["params"]["head"]["kernel"], more["state"].params["head"]["kernel"])
  assert checkpoints.fingerprint(trained_on) != first


def test_finetune_starts_from_the_trained_network(small, tmp_path):
  """finetune.py:DIR rebuilds the folder's network exactly (here: original blocks, both-sides shortcut pad,
  ImageNet input statistics) and starts from its weights; a resumed run ignores init_from."""
  from experiments.configs import finetune
  src = _config(num_epochs=1)
  src.model = cifar10.get_config("resnet8_original").model
  src.model.shortcut_pad, src.model.input_stats = "both", "imagenet"
  first = train.train_and_evaluate(src, str(tmp_path / "src"), data=small)
  c = finetune.get_config(f"{tmp_path / 'src'},epochs=1,lr=0.05")
  assert (c.model.shortcut_pad, c.model.input_stats, c.learning_rate, c.num_epochs) == ("both", "imagenet", 0.05, 1)
  c.batch_size, c.eval_batch_size, c.progress, c.max_steps = 32, 200, False, 0
  start = train.train_and_evaluate(c, str(tmp_path / "ft"), data=small)   # 0 steps: the network as imported
  assert start["test_error"] == first["test_error"] and start["test_loss"] == pytest.approx(first["test_loss"])
  c.max_steps = -1
  tuned = train.train_and_evaluate(c, str(tmp_path / "ft"), data=small)
  assert tuned["step"] == 256 // 32 and tuned["test_loss"] != start["test_loss"]
  with pytest.raises(ValueError, match="parameters do not match|holds"):
    other = finetune.get_config(str(tmp_path / "src"))
    other.model.depth, other.progress = 14, False
    train.train_and_evaluate(other, str(tmp_path / "other"), data=small)
  with pytest.raises(ValueError, match="finetune option must be"):
    finetune.get_config(f"{tmp_path / 'src'},epoch=3")


_SHARDED = r"""
import functools, sys, jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, %r)
from experiments.configs import cifar10
from resnet_ensembles import models
from resnet_ensembles.training import schedules, steps
from resnet_ensembles.parallel.mesh import data_mesh, replicate, shard_batch_spec
c = cifar10.get_config("resnet8"); c.batch_size = 16
model = models.from_config(c)
tx = schedules.make_optimizer(c, schedules.learning_rate_fn(c, 10))
mesh = data_mesh()
state = replicate(steps.create_state(c, model, tx, jax.random.PRNGKey(0)), mesh)
step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, sampler=None), donate_argnums=0)
rng = np.random.default_rng(0)
losses = []
for i in range(3):
  batch = {"image": rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
           "label": rng.integers(0, 10, (16,)).astype(np.int32)}
  state, m = step(state, jax.device_put(batch, shard_batch_spec(mesh)), jax.random.PRNGKey(1))
  losses.append(float(m["loss"]))
print(jax.device_count(), *losses)
"""


def test_eight_fake_devices_match_one_device(fake_devices_env):
  out = {}
  for n in (1, 8):
    res = subprocess.run([sys.executable, "-c", _SHARDED % ROOT], env=fake_devices_env(n), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    devices, *losses = res.stdout.split()
    assert int(devices) == n
    out[n] = np.array(losses, float)
  np.testing.assert_allclose(out[8], out[1], rtol=2e-5)
  assert out[1][2] != out[1][0]


def test_git_commit_names_the_code_that_ran(monkeypatch):
  """A copy of the code on another machine says its commit through $RESNET_ENSEMBLES_COMMIT (its own git
  state may be another commit); here, HEAD, marked -dirty while tracked files differ from it."""
  from resnet_ensembles.utils import provenance
  monkeypatch.delenv("RESNET_ENSEMBLES_COMMIT", raising=False)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=root)
  if head.returncode:
    pytest.skip("not a git checkout")
  dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=root).returncode != 0
  assert provenance.git_commit() == head.stdout.strip() + ("-dirty" if dirty else "")
  monkeypatch.setenv("RESNET_ENSEMBLES_COMMIT", "abc123")
  assert provenance.git_commit() == "abc123"


def test_trained_by_names_the_starts_that_trained_steps():
  from resnet_ensembles.utils import provenance
  starts = [{"step": 0, "git_commit": "a" * 40, "host": "h", "devices": "1 x cpu"},
            {"step": 100, "git_commit": "b" * 40, "host": "h", "machine": "one H200"},
            {"step": 300, "git_commit": "c" * 40, "host": "h"}]  # resumed at the end: trained nothing
  assert provenance.trained_by(starts, 300) == "aaaaaaa on 1 x cpu: steps 0-100; bbbbbbb on one H200: steps 100-300"
  assert provenance.trained_by([], 5) == "steps 0-5: not recorded"
  assert provenance.trained_by([], 0) == "no record"
  assert provenance.trained_by(starts[1:], 300) == "steps 0-100: not recorded; bbbbbbb on one H200: steps 100-300"


# --- runs that cannot trample each other; damaged checkpoints named and skipped; kill -9 -----------------

_HOLD_LOCK = r"""
import sys, time
sys.path.insert(0, %r)
from resnet_ensembles.store import lock
with lock.hold(%r):
  print("held", flush=True)
  time.sleep(120)
"""


def test_a_second_run_on_a_held_workdir_fails_at_once_naming_the_holder(small, tmp_path):
  """Another process holds the workdir: training fails in one line naming its pid, before writing a thing;
  once the holder is SIGKILLed the lock is free at once (the OS drops it: no stale lock)."""
  from resnet_ensembles.store import lock
  workdir = str(tmp_path / "run")
  holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK % (ROOT, workdir)], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RuntimeError, match=f"{workdir} is in use by pid {holder.pid} on host .* \\(started "
                       ".*\\); wait for it or use another --workdir") as e:
      train.train_and_evaluate(_config(max_steps=1), workdir, data=small)
    assert "\n" not in str(e.value) and os.listdir(workdir) == [".lock"]  # nothing written
  finally:
    holder.kill()
    holder.wait()
  with lock.hold(workdir):  # free at once
    with lock.hold(workdir):  # the same process may re-enter its own folder
      with lock.hold(str(tmp_path / "run" / "inner")):  # and hold another one inside it
        pass


def _files(folder) -> dict:
  return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def uninterrupted(small, tmp_path_factory):
  """One 2-epoch run (keep=2: checkpoints at steps 8 and 16) that the damage and kill tests compare with."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  return workdir, train.train_and_evaluate(_config(), str(workdir), data=small)


# orbax's reads of the truncated file fail inside coroutines that are then dropped: Python reports each as
# "exception ignored" when it collects them. Those failures are what this test makes happen.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_latest_checkpoint_is_named_and_the_previous_one_resumed(small, uninterrupted, tmp_path, caplog):
  """keep=2 kept steps 8 and 16; step 16's largest data file truncated to 1,000 bytes: the rerun warns,
  resumes from step 8 and ends exactly where the undamaged run did (training from 8 is deterministic), the
  damaged step is kept in checkpoints/damaged_16. With every step damaged: one line, every file in place."""
  import shutil
  shutil.copytree(uninterrupted[0], tmp_path / "a")
  full = uninterrupted[1]
  ckdir = tmp_path / "a" / "checkpoints"
  assert sorted(os.listdir(ckdir)) == ["16", "8"]

  def damage(step):
    data_file = max((p for p in (ckdir / step).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    os.truncate(data_file, 1000)
    return data_file.relative_to(ckdir / step)
  damaged_file = damage("16")
  before = _files(tmp_path / "a")
  _, variables, _ = checkpoints.load_trained(str(tmp_path / "a"))  # experiments read step 8, move nothing
  assert "checkpoint step 16 cannot be read (ValueError: OUT_OF_RANGE: " in caplog.text and _files(tmp_path / "a") == before
  caplog.clear()
  resumed = train.train_and_evaluate(_config(), str(tmp_path / "a"), data=small)
  assert "checkpoint step 16 cannot be read" in caplog.text and "moved the unreadable step 16 aside" in caplog.text
  assert resumed["step"] == 16 and resumed["test_loss"] == full["test_loss"]
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(resumed["state"])):
    np.testing.assert_array_equal(a, b)
  assert sorted(os.listdir(ckdir)) == ["16", "8", "damaged_16"]
  assert (ckdir / "damaged_16" / damaged_file).stat().st_size == 1000  # kept, as it was
  from resnet_ensembles.utils import provenance
  assert [s["step"] for s in provenance.read_starts(str(tmp_path / "a"))] == [0, 8]

  damage("16"), damage("8")
  before = _files(tmp_path / "a")
  with pytest.raises(RuntimeError, match=r"no checkpoint can be read \(steps tried: 16 \(ValueError: .*\), "
                     r"8 \(ValueError: .*\)\); nothing was deleted") as e:
    train.train_and_evaluate(_config(), str(tmp_path / "a"), data=small)
  assert "\n" not in str(e.value) and _files(tmp_path / "a") == before


_TRAIN_SLOWLY = r"""
import sys, time
import numpy as np
sys.path.insert(0, %r)
from experiments.configs import cifar10
from resnet_ensembles import training
from resnet_ensembles.training import metrics
update = metrics.Progress.update
def slow_update(self, step):  # called at logged steps (4, 8, 12, 16): 3 s to be killed in epoch 2; changes no number
  time.sleep(3 if step > 8 else 0)
  return update(self, step)
metrics.Progress.update = slow_update
z = np.load(%r)
c = cifar10.get_config("resnet8")
c.batch_size, c.eval_batch_size, c.num_epochs, c.log_every_steps, c.progress = 32, 200, 2, 4, False
training.train_and_evaluate(c, %r, data={"train": (z["xtr"], z["ytr"]), "test": (z["xte"], z["yte"])})
"""


def test_sigkill_mid_epoch_then_rerun_matches_uninterrupted(small, uninterrupted, tmp_path):
  """A real kill -9 in epoch 2 (after the epoch-1 checkpoint): the rerun resumes from step 8 and ends bit for
  bit where an uninterrupted run ends (parameters, optimizer state, test loss)."""
  import signal
  import time
  np.savez(tmp_path / "small.npz", xtr=small["train"][0], ytr=small["train"][1], xte=small["test"][0],
           yte=small["test"][1])
  workdir = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "-c", _TRAIN_SLOWLY % (ROOT, str(tmp_path / "small.npz"), str(workdir))])
  try:
    deadline = time.time() + 240
    while not any(r.get("step", 0) >= 12 for r in _rows(workdir)):  # step 8 checkpointed, half of epoch 2
      assert proc.poll() is None and time.time() < deadline, "the run ended or stalled before it could be killed"
      time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  assert sorted(os.listdir(workdir / "checkpoints")) == ["8"]
  resumed = train.train_and_evaluate(_config(), str(workdir), data=small)
  full_dir, full = uninterrupted
  assert resumed["step"] == full["step"] == 16 and resumed["test_loss"] == full["test_loss"]
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(resumed["state"])):
    np.testing.assert_array_equal(a, b)
  losses = lambda d: [(r["step"], r.get("train/loss"), r.get("eval/test_loss")) for r in _rows(d)]
  assert losses(workdir) == losses(full_dir)  # metrics.jsonl: the killed epoch's lines were dropped


def _rows(workdir) -> list:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(l) for l in f.read().splitlines() if l.strip()]
