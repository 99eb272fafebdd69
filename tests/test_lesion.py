import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from resnet_ensembles.data import cifar10 as data
from resnet_ensembles.lesion import sweep as lesion
from resnet_ensembles.lesion import batchnorm, masks, wavefront
from resnet_ensembles.parallel.mesh import data_mesh
from resnet_ensembles import models
from resnet_ensembles.models import samplers
from resnet_ensembles.models.layout import check_block_order
from tests.reference import reference_forward

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_IMAGES = 40


def _net(model, seed=0):
  """He-style random weights, perturbed BN statistics (so stored-statistics bugs cannot hide) and a head
  bias centring the logits so that predictions vary by image. Filled with numpy: eager `init` is slow."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(seed)

  def fill(path, a):
    name, noise = path[-1].key, rng.standard_normal(a.shape)
    if name == "kernel":
      return noise * np.sqrt(2.0 / np.prod(a.shape[:-1]))
    return {"var": np.exp(0.2 * noise), "scale": 1 + 0.1 * noise}.get(name, 0.1 * noise)
  v = jax.tree.map(lambda a: np.asarray(a, np.float32), jax.tree_util.tree_map_with_path(fill, shapes))
  x = data.normalize(_images(seed))
  logits = jax.jit(model.apply)(v, x)
  v["params"] = dict(v["params"], head=dict(v["params"]["head"], bias=-jnp.mean(logits, 0)))
  return v


def _images(seed=0, n=N_IMAGES):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def net14():
  model = models.CifarResNet(14)  # 6 blocks, openers 0, 2, 4
  v = _net(model)
  x = _images(1)
  y = np.asarray(jnp.argmax(jax.jit(model.apply)(v, data.normalize(x)), -1)).astype(np.int32)  # full net: 0 error
  return model, v, (x, y)


def _loop_errors(model, v, split, mask_stack, order_stack=None):
  x, y = data.normalize(split[0]), split[1]
  apply = jax.jit(lambda m, o: model.apply(v, x, block_mask=m, block_order=o))
  errs, per_class = [], []
  for i, m in enumerate(mask_stack):
    o = None if order_stack is None else order_stack[i]
    pred = np.argmax(np.asarray(apply(m, o)), -1)
    errs.append(np.mean(pred != y))
    per_class.append([np.mean(pred[y == c] == c) if np.any(y == c) else np.nan for c in range(10)])
  return np.array(errs), np.array(per_class)


def test_vmapped_sweep_equals_python_loop(net14):
  model, v, split = net14
  stack = np.concatenate([masks.single_deletions(model.layout)[0],
                          masks.random_deletions(model.layout, 2, seed=3, ks=[2, 3], include_openers=True)[0]])
  out = lesion.evaluate(model, v, split, stack, batch_size=16)  # 3 batches, the last padded
  errs, per_class = _loop_errors(model, v, split, stack)
  np.testing.assert_allclose(out["error"], errs, atol=1e-12)
  np.testing.assert_allclose(out["class_accuracy"], per_class, atol=1e-12)
  assert len(set(np.round(errs, 6))) > 3 and "top5_error" not in out


def test_chunked_equals_one_chunk(net14):
  model, v, split = net14
  stack = masks.random_deletions(model.layout, 3, seed=0)[0]
  assert lesion.masks_per_chunk(model, 16, 1, 1, len(stack)) == 1
  one = lesion.evaluate(model, v, split, stack, batch_size=16)
  chunked = lesion.evaluate(model, v, split, stack, batch_size=16, memory_budget=1)
  for k in one:
    np.testing.assert_array_equal(chunked[k], one[k])


@pytest.mark.parametrize("cls,depth,variant", [(models.CifarResNet, 14, "preact"),
                                               (models.CifarResNet, 8, "original"), (models.PlainNet, 8, "preact")])
def test_prefix_shared_sweep_equals_vmapped_and_hand_built(cls, depth, variant):
  model = cls(depth, variant)
  v = _net(model)
  x = _images(1, 24)
  n = model.layout.num_blocks
  logits = jax.jit(lambda v, x: lesion.wavefront_logits(model, v, x))(v, data.normalize(x))
  np.testing.assert_allclose(logits[0], reference_forward(model, v, data.normalize(x)), rtol=1e-4, atol=1e-4)
  for i in range(n):  # deleting block i == a network built without block i
    np.testing.assert_allclose(logits[1 + i], reference_forward(model, v, data.normalize(x), deleted=(i,)),
                               rtol=1e-4, atol=1e-4)
  single = masks.single_deletions(model.layout)[0]
  y = np.asarray(jnp.argmax(logits[1 + n // 2], -1)).astype(np.int32)  # labels that make errors differ
  swept = lesion.single_deletion_sweep(model, v, (x, y), batch_size=16)
  plain = lesion.evaluate(model, v, (x, y), np.concatenate([single, np.ones((1, n))]), batch_size=16)
  np.testing.assert_array_equal(swept["error"], plain["error"][:n])
  np.testing.assert_array_equal(swept["class_accuracy"], plain["class_accuracy"][:n])
  assert swept["error"][n // 2] == 0 and swept["full_error"] == plain["error"][n]


def test_branch_scale_lesions_the_network_as_tested(net14):
  """A stochastic-depth network is used with branches scaled by p_l: every engine lesions that network."""
  model, v, split = net14
  n = model.layout.num_blocks
  scale = samplers.survival_probabilities(n, 0.5)
  stack = np.concatenate([masks.single_deletions(model.layout)[0], np.ones((1, n), np.float32)])
  scaled = lesion.evaluate(model, v, split, stack, batch_size=16, branch_scale=scale)
  errs, _ = _loop_errors(model, v, split, stack * scale)
  np.testing.assert_allclose(scaled["error"], errs, atol=1e-12)
  assert not np.allclose(scaled["error"], lesion.evaluate(model, v, split, stack, batch_size=16)["error"])
  swept = lesion.single_deletion_sweep(model, v, split, batch_size=16, branch_scale=scale)
  np.testing.assert_array_equal(swept["error"], scaled["error"][:n])
  assert swept["full_error"] == scaled["error"][n]
  with pytest.raises(ValueError, match="branch_scale must be"):
    lesion.evaluate(model, v, split, stack, branch_scale=np.zeros(n))
  # Reordered (depth 20: two movable blocks per stage): a block carries its own scale where it moves.
  model = models.CifarResNet(20)
  v, scale = _net(model), samplers.survival_probabilities(9, 0.5)
  x, y = _images(2), np.random.default_rng(5).integers(0, 10, N_IMAGES).astype(np.int32)
  orders = masks.random_reorderings(model.layout, 3, seed=0, swaps=[1])[0]
  got = lesion.evaluate(model, v, (x, y), orders=orders, batch_size=16, branch_scale=scale)["error"]
  apply = jax.jit(lambda m, o: model.apply(v, data.normalize(x), block_mask=m, block_order=o))
  want = [np.mean(np.argmax(np.asarray(apply(scale[o], o)), -1) != y) for o in orders]
  np.testing.assert_allclose(got, want, atol=1e-12)


def test_sweep_network_evaluates_repeated_lesions_once(net14, tmp_path, monkeypatch):
  """lesion_study on an exported network: repeated random lesions are evaluated once and fanned back
  out, so every row equals the plain vmapped sweep of the whole stack."""
  from experiments.configs import cifar10
  from resnet_ensembles.store import checkpoints
  from resnet_ensembles.lesion import study as lesion_study
  model, v, split = net14
  path = checkpoints.export_variables(v, cifar10.get_config("resnet14"), str(tmp_path / "net"))
  data_ = {"test": split, "train": split}
  evaluated, real = [], lesion.evaluate

  def counting(model, variables, split, masks=None, orders=None, **kw):
    evaluated.append(np.asarray(masks))
    return real(model, variables, split, masks, orders, **kw)
  monkeypatch.setattr(lesion, "evaluate", counting)
  net = lesion_study.sweep_network(path, "ResNet", data_, "multi", num_samples=6, max_k=3, batch_size=16)
  m, _, rows = lesion_study.lesion_stack(model.layout, "multi", num_samples=6, max_k=3)
  distinct = np.unique(m, axis=0)
  assert len(distinct) < len(m)  # 3 deletable blocks: k = 3 has one mask, drawn 6 times
  assert len(evaluated) == 1 and len(evaluated[0]) == len(distinct)  # each distinct lesion evaluated once
  np.testing.assert_array_equal(np.unique(evaluated[0], axis=0), distinct)
  direct = real(model, v, split, m, batch_size=16)
  np.testing.assert_allclose([r["error"] for r in net["rows"]], direct["error"][:-1], atol=1e-12)
  assert net["full_error"] == direct["error"][-1] and [r["k"] for r in net["rows"]] == [r["k"] for r in rows[:-1]]


def test_orders_identity_and_swaps():
  model = models.CifarResNet(20)  # movable: 1,2 | 4,5 | 7,8
  v = _net(model)
  x = _images(3)
  y = np.random.default_rng(4).integers(0, 10, N_IMAGES).astype(np.int32)
  orders, swaps, taus = masks.random_reorderings(model.layout, 3, seed=1, swaps=[0, 1, 2])
  assert np.all(orders[:3] == np.arange(9)) and np.all(taus[:3] == 1)
  out = lesion.evaluate(model, v, (x, y), orders=orders, batch_size=16)
  unordered = np.argmax(np.asarray(jax.jit(model.apply)(v, data.normalize(x))), -1)
  np.testing.assert_array_equal(out["error"][:3], np.mean(unordered != y))
  assert len(set(out["error"].tolist())) > 2
  for i in (3, 8):  # one and two swaps against the hand-built network
    ref = np.argmax(np.asarray(reference_forward(model, v, data.normalize(x), order=orders[i])), -1)
    assert out["error"][i] == pytest.approx(np.mean(ref != y), abs=1e-12)


def test_generators_are_seeded_and_respect_stages():
  lay = models.CifarResNet(56).layout  # 27 blocks, openers 0, 9, 18
  a, ka = masks.random_deletions(lay, 5, seed=7)
  b, kb = masks.random_deletions(lay, 5, seed=7)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, masks.random_deletions(lay, 5, seed=8)[0])
  assert list(np.unique(ka)) == list(range(1, 21)) and np.all((1 - a).sum(1) == ka)
  assert np.all(a[:, list(lay.stage_openers)] == 1)
  with_openers = masks.random_deletions(lay, 20, seed=0, ks=[20], include_openers=True)[0]
  assert np.any(with_openers[:, list(lay.stage_openers)] == 0)
  single, deleted = masks.single_deletions(lay)
  assert single.shape == (27, 27) and np.all(np.diag(single) == 0) and list(deleted) == list(range(27))
  assert masks.default_ks(models.CifarResNet(14).layout) == [1, 2, 3]
  orders, swaps, taus = masks.random_reorderings(lay, 4, seed=5, swaps=[1, 3, 10])
  again = masks.random_reorderings(lay, 4, seed=5, swaps=[1, 3, 10])
  np.testing.assert_array_equal(orders, again[0])
  for o, k, tau in zip(orders, swaps, taus):
    check_block_order(o, lay)  # within stages, openers first
    assert np.sum(o != np.arange(27)) <= 2 * k
    n = len(o)
    discordant = sum(o[i] > o[j] for i in range(n) for j in range(i + 1, n))
    assert tau == pytest.approx(1 - 4 * discordant / (n * (n - 1)), abs=1e-12)
    assert tau == pytest.approx(stats.kendalltau(np.arange(n), o).statistic, abs=1e-12)
  assert np.all(np.sum(orders[:4] != np.arange(27), 1) == 2)


def test_recalibration_averages_batch_statistics(net14):
  model, v, _ = net14
  xs = np.stack([_images(10 + i, 16) for i in range(3)])
  full = np.ones(6, np.float32)
  recal = jax.jit(lambda v, m, r: lesion.recalibrated_stats(model, v, m, None, r))
  got = recal(v, full, xs)
  # First BN layer (block 0's bn1 sees the stem output): average of per-batch mean / biased variance.
  h = [model.apply(v, data.normalize(x), method=model.embed) for x in xs]
  np.testing.assert_allclose(got["block_00"]["bn1"]["mean"], np.mean([a.mean((0, 1, 2)) for a in h], 0),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["block_00"]["bn1"]["var"], np.mean([a.var((0, 1, 2)) for a in h], 0),
                             rtol=1e-4, atol=1e-6)
  # Statistics recalibrated on copies of one batch make inference reproduce training mode on it.
  same = recal(v, full, np.stack([xs[0]] * 3))
  x0 = data.normalize(xs[0])
  train_logits, _ = jax.jit(lambda v: model.apply(v, x0, train=True, mutable=["batch_stats"]))(v)
  inference = jax.jit(lambda v: model.apply(v, x0))({"params": v["params"], "batch_stats": same})
  np.testing.assert_allclose(inference, train_logits, rtol=1e-3, atol=1e-4)
  # A deleted block keeps its stored statistics; evaluate() uses exactly these statistics.
  mask = full.copy()
  mask[3] = 0
  lesioned = recal(v, mask, xs)
  np.testing.assert_array_equal(lesioned["block_03"]["bn1"]["var"], v["batch_stats"]["block_03"]["bn1"]["var"])
  assert not np.allclose(lesioned["block_05"]["bn1"]["var"], got["block_05"]["bn1"]["var"])
  y = np.random.default_rng(0).integers(0, 10, 16).astype(np.int32)
  split = (xs[1], y)
  out = lesion.evaluate(model, v, split, mask[None], bn="recalibrate_all", recal_split=(xs.reshape(48, 32, 32, 3), y),
                        recal_batches=3, recal_batch_size=16, batch_size=16)
  rx = data.subset((xs.reshape(48, 32, 32, 3), np.zeros(48)), 48, 0)[0].reshape(3, 16, 32, 32, 3)
  ref = recal(v, mask, rx)
  pred = np.argmax(np.asarray(model.apply({"params": v["params"], "batch_stats": ref}, data.normalize(xs[1]),
                                          block_mask=mask)), -1)
  assert out["error"][0] == pytest.approx(np.mean(pred != y), abs=1e-12)


def test_recalibration_with_orders_equals_swapped_variables():
  model = models.CifarResNet(20)
  v = _net(model)
  xs = np.stack([_images(20 + i, 8) for i in range(2)])
  order = np.arange(9)
  order[[7, 8]] = [8, 7]
  mask = np.ones(9, np.float32)
  mask[1] = 0
  recal = jax.jit(lambda v, o: lesion.recalibrated_stats(model, v, mask, o, xs))
  got = recal(v, order)
  swapped = {c: dict(v[c], block_07=v[c]["block_08"], block_08=v[c]["block_07"]) for c in v}
  ref = recal(swapped, None)
  np.testing.assert_allclose(got["block_07"]["bn2"]["var"], ref["block_08"]["bn2"]["var"], rtol=1e-5)
  np.testing.assert_allclose(got["head_bn"]["mean"], ref["head_bn"]["mean"], rtol=1e-4, atol=1e-6)


def _downstream(model, v, masks_, orders, xs):
  """Downstream-recalibrated statistics of a stack of lesions, vmapped as `lesion.evaluate` runs them."""
  n = model.layout.num_blocks

  def one(m, o):
    return batchnorm.recalibrated_stats(model, v, m, o, xs, batchnorm.first_change(m, o, n))
  return jax.jit(jax.vmap(one))(jnp.asarray(masks_), None if orders is None else jnp.asarray(orders))


def _equal_trees(a, b) -> bool:
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_downstream_recalibration_keeps_the_deployed_network(net14):
  model, v, split = net14
  xs = np.stack([_images(30 + i, 16) for i in range(2)])
  full, mask = np.ones(6, np.float32), np.ones(6, np.float32)
  mask[3] = 0
  got = _downstream(model, v, np.stack([full, mask]), None, xs)
  intact, lesioned = (jax.tree.map(lambda a, i=i: np.asarray(a[i]), got) for i in range(2))
  # The intact network keeps every stored statistic, bit for bit: its cost baseline is the deployed network.
  assert _equal_trees(intact, v["batch_stats"])
  # Positions before the deletion see the deployed network's input: their statistics stay stored. The deleted
  # block keeps its own; the blocks after it and the final norm are re-estimated.
  for pos in range(4):
    assert _equal_trees(lesioned[f"block_{pos:02d}"], v["batch_stats"][f"block_{pos:02d}"])
  for name in ("block_04", "block_05", "head_bn"):
    assert not np.allclose(jax.tree.leaves(lesioned[name])[0], jax.tree.leaves(v["batch_stats"][name])[0])
  # Block 4's first BN sees the deployed prefix (blocks 0-2 with stored statistics, block 3 deleted): its
  # statistics are the batches' mean of that activation's statistics.
  def entering_4(x):
    h = model.apply(v, data.normalize(x), method=model.embed)
    for pos in range(4):
      h = model.apply(v, h, pos, mask=mask[pos], method=model.block)
    return h
  h = [entering_4(x) for x in xs]
  np.testing.assert_allclose(lesioned["block_04"]["bn1"]["mean"], np.mean([a.mean((0, 1, 2)) for a in h], 0),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(lesioned["block_04"]["bn1"]["var"], np.mean([a.var((0, 1, 2)) for a in h], 0),
                             rtol=1e-4, atol=1e-5)
  # evaluate() under bn="recalibrate" scores the intact network exactly as the stored statistics do.
  stack = np.stack([full, mask])
  recal = lesion.evaluate(model, v, split, stack, bn="recalibrate", recal_split=(xs.reshape(32, 32, 32, 3),
                          np.zeros(32, np.int32)), recal_batches=2, recal_batch_size=16, batch_size=20)
  stored = lesion.evaluate(model, v, split, stack, batch_size=20)
  assert recal["error"][0] == stored["error"][0]
  np.testing.assert_array_equal(recal["class_accuracy"][0], stored["class_accuracy"][0])


def test_downstream_recalibration_of_the_last_post_activation_block_is_stored():
  model = models.CifarResNet(14, variant="original")  # no norm after the last block
  v = _net(model)
  xs = np.stack([_images(40 + i, 8) for i in range(2)])
  last = np.ones(6, np.float32)
  last[5] = 0
  got = jax.tree.map(lambda a: np.asarray(a[0]), _downstream(model, v, last[None], None, xs))
  assert _equal_trees(got, v["batch_stats"])  # nothing downstream of the deletion: the stored network


def test_downstream_recalibration_vmapped_equals_a_loop():
  model = models.CifarResNet(20)  # 9 blocks, openers 0, 3, 6
  v = _net(model)
  xs = np.stack([_images(50 + i, 8) for i in range(2)])
  ms = masks.random_deletions(model.layout, 2, seed=3, ks=[1, 2])[0]
  ms = np.concatenate([ms, np.ones((2, 9), np.float32)])
  orders = np.tile(np.arange(9), (6, 1))
  orders[4, [7, 8]], orders[5, [4, 5]] = [8, 7], [5, 4]  # two reorderings (stage 2, stage 1)
  ms[4:] = 1
  got = _downstream(model, v, ms, orders, xs)
  one = jax.jit(lambda m, o: batchnorm.recalibrated_stats(model, v, m, o, xs, batchnorm.first_change(m, o, 9)))
  for i in range(len(ms)):
    ref = one(jnp.asarray(ms[i]), jnp.asarray(orders[i]))
    for a, b in zip(jax.tree.leaves(jax.tree.map(lambda t, i=i: t[i], got)), jax.tree.leaves(ref)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The reordering in stage 2 (first changed position 7) leaves stages 0 and 1 stored.
  assert _equal_trees({k: jax.tree.map(lambda t: t[4], got[k]) for k in [f"block_{p:02d}" for p in range(7)]},
                      {k: v["batch_stats"][k] for k in [f"block_{p:02d}" for p in range(7)]})
  # With the identity order the lesion is the mask: an order that changes nothing changes no statistic.
  ident = one(jnp.asarray(ms[0]), jnp.arange(9))
  plain = jax.jit(lambda m: batchnorm.recalibrated_stats(model, v, m, None, xs,
                                                         batchnorm.first_change(m, None, 9)))(jnp.asarray(ms[0]))
  for a, b in zip(jax.tree.leaves(ident), jax.tree.leaves(plain)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_inputs_fail_clearly(net14):
  model, v, split = net14
  lay = model.layout
  with pytest.raises(ValueError, match=r"masks must have shape \[M, 6\]"):
    lesion.evaluate(model, v, split, np.ones((2, 5)))
  with pytest.raises(ValueError, match="bn must be one of"):
    lesion.evaluate(model, v, split, np.ones((2, 6)), bn="running")
  with pytest.raises(ValueError, match="needs recal_split"):
    lesion.evaluate(model, v, split, np.ones((2, 6)), bn="recalibrate")
  with pytest.raises(ValueError, match="within stages"):
    lesion.evaluate(model, v, split, orders=np.array([0, 2, 1, 3, 4, 5]))
  with pytest.raises(ValueError, match="cannot delete k=4 blocks"):
    masks.random_deletions(lay, 2, seed=0, ks=[4])
  with pytest.raises(ValueError, match="no two non-opener blocks"):
    masks.random_reorderings(lay, 2, seed=0)


def _sharded_results() -> dict:
  """Errors of all three engines on whatever devices this process has (6 masks: padded for 4 devices)."""
  model = models.CifarResNet(8)
  v = _net(model)
  x, y = _images(1), np.random.default_rng(2).integers(0, 10, N_IMAGES).astype(np.int32)
  stack = masks.random_deletions(model.layout, 3, seed=0, ks=[1, 2], include_openers=True)[0]
  return {"devices": jax.device_count(),
          "vmapped": lesion.evaluate(model, v, (x, y), stack, batch_size=16)["error"].tolist(),
          "recal": lesion.evaluate(model, v, (x, y), stack[:3], bn="recalibrate", recal_split=(x, y),
                                   recal_batches=2, recal_batch_size=8, batch_size=16)["error"].tolist(),
          "prefix": lesion.single_deletion_sweep(model, v, (x, y), batch_size=18)["error"].tolist()}


_SHARDED = "import json, sys; sys.path.insert(0, %r); from tests.test_lesion import _sharded_results; " \
           "print(json.dumps(_sharded_results()))"


def test_four_fake_devices_match_one_device(fake_devices_env):
  res = subprocess.run([sys.executable, "-c", _SHARDED % ROOT], env=fake_devices_env(4), capture_output=True,
                       text=True, timeout=300)
  assert res.returncode == 0, res.stderr[-2000:]
  four, one = json.loads(res.stdout.strip().splitlines()[-1]), _sharded_results()
  assert four["devices"] == 4 and one["devices"] == 1
  for k in ("vmapped", "recal", "prefix"):
    np.testing.assert_allclose(four[k], one[k], atol=1e-12)


def test_paper_overlay_only_for_normally_trained_networks():
  from resnet_ensembles.plots import lesion as lesion_plots
  net = {"label": "ResNet", "num_blocks": 15, "train_mask": {"kind": "none"}}
  plain = {"label": "plain", "num_blocks": 15, "train_mask": None}
  single = lesion_plots.paper_overlay({"sweep": "single", "networks": [net, plain]})
  assert single["ResNet"]["x"] == [1, 15] and single["plain"]["y"][0] > 80   # the paper's plain net: near chance
  multi = lesion_plots.paper_overlay({"sweep": "multi", "networks": [dict(net, train_mask=None)]})
  assert multi["ResNet"]["x"] == [5, 10, 20]
  sd = dict(net, train_mask={"kind": "stochastic_depth"})
  assert lesion_plots.paper_overlay({"sweep": "single", "networks": [sd]}) is None


def test_interrupted_sweep_resumes_at_its_first_unfinished_chunk(net14, tmp_path, monkeypatch, caplog):
  """A sweep stopped after some chunks (here an exception in the 4th; kill -9 leaves the same files: each is
  renamed into place whole) evaluates only the remaining chunks when rerun, and its rows equal an
  uninterrupted run's exactly; other settings start afresh, a damaged chunk file is evaluated again."""
  import logging
  from experiments.configs import cifar10
  from resnet_ensembles.lesion import common, progress
  from resnet_ensembles.lesion import study as lesion_study
  from resnet_ensembles.store import checkpoints
  model, v, split = net14
  path = checkpoints.export_variables(v, cifar10.get_config("resnet14"), str(tmp_path / "net"))
  data_ = {"test": split, "train": split}
  real, calls, stop_at = lesion._evaluate_fns, [0], [None]

  def counting(model, mesh, recal, *scope):
    count_fn, recal_fn = real(model, mesh, recal, *scope)

    def counted(*args):
      if calls[0] == stop_at[0]:
        raise KeyboardInterrupt("stopped mid-sweep")
      calls[0] += 1
      return count_fn(*args)
    return counted, recal_fn
  monkeypatch.setattr(lesion, "_evaluate_fns", counting)
  out = str(tmp_path / "multi_stored.json")
  folder = progress.partial_dir(out, "Res Net/1")
  assert folder == out + ".partial/Res_Net_1"

  def run(resume=True, **kw):
    calls[0] = 0
    args = dict(num_samples=4, max_k=3, batch_size=16, memory_budget_mb=1)  # 1 MiB: one network a chunk
    return lesion_study.sweep_network(path, "Res Net/1", data_, "multi", resume_dir=folder if resume else None,
                                      **dict(args, **kw))
  whole = run(resume=False)
  per_chunk = len(range(0, N_IMAGES, common.balanced_batch(16, N_IMAGES)))  # test batches: count_fn calls a chunk
  num_chunks = calls[0] // per_chunk
  assert num_chunks >= 6 and calls[0] == num_chunks * per_chunk and not os.path.exists(folder)
  stop_at[0] = 3 * per_chunk  # the 4th chunk never finishes
  with pytest.raises(KeyboardInterrupt):
    run()
  stop_at[0] = None
  assert sorted(f for f in os.listdir(folder) if f.startswith("chunk_")) == [f"chunk_{i:05d}.npz" for i in range(3)]
  with caplog.at_level(logging.INFO):
    resumed = run()
  assert calls[0] == (num_chunks - 3) * per_chunk  # only the remaining chunks were evaluated
  assert f"resuming at chunk 4/{num_chunks}" in caplog.text
  same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN (absent class) == NaN
  assert same(resumed, whole)
  assert same(run()["rows"], whole["rows"]) and calls[0] == 0  # all there: nothing evaluated
  with open(os.path.join(folder, "chunk_00002.npz"), "r+b") as f:  # a damaged file: that chunk again
    f.truncate(100)
  assert same(run()["rows"], whole["rows"]) and calls[0] == per_chunk
  caplog.clear()
  with caplog.at_level(logging.INFO):  # other settings (the seed: other masks): never mixed, afresh
    other = run(seed=1)
  assert "starting afresh" in caplog.text and "seed" in caplog.text and calls[0] > 0
  assert same(other["rows"], run(resume=False, seed=1)["rows"]) and not same(other["rows"], whole["rows"])
  progress.discard(out)
  assert not os.path.exists(out + ".partial")


@pytest.mark.parametrize("cls,depth,variant,bn", [(models.CifarResNet, 14, "preact", "recalibrate"),
                                                  (models.CifarResNet, 8, "original", "recalibrate"),
                                                  (models.CifarResNet, 8, "preact", "recalibrate_all")])
def test_recalibrated_wavefront_equals_the_vmapped_sweep_and_resumes(cls, depth, variant, bn, tmp_path):
  """The single deletions recalibrated through the prefix-shared wavefront (each stream with its own statistics)
  score what `evaluate` scores under the same BatchNorm mode; killed after a chunk, a rerun continues from it."""
  model = cls(depth, variant)
  v = _net(model)
  n = model.layout.num_blocks
  x = _images(2, 30)
  recal_split = (_images(60, 32), np.zeros(32, np.int32))
  stack = np.concatenate([masks.single_deletions(model.layout)[0], np.ones((1, n), np.float32)])
  kw = dict(bn=bn, recal_split=recal_split, recal_batches=2, recal_batch_size=16)
  stats = lesion.recalibrated_stack(model, v, stack, **kw)
  stats = jax.tree.map(lambda a: np.concatenate([a[-1:], a[:-1]]), stats)  # the intact network's row first
  logits = jax.jit(lambda s: lesion.wavefront_logits(model, v, data.normalize(x), stream_stats=s))(stats)
  y = np.asarray(jnp.argmax(logits[1 + n // 2], -1)).astype(np.int32)  # labels that make errors differ
  plain = lesion.evaluate(model, v, (x, y), stack, batch_size=10, **kw)
  swept = lesion.single_deletion_sweep(model, v, (x, y), batch_size=10, stream_stats=stats)
  np.testing.assert_array_equal(swept["error"], plain["error"][:n])
  np.testing.assert_array_equal(swept["class_accuracy"], plain["class_accuracy"][:n])
  assert swept["error"][n // 2] == 0 and swept["full_error"] == plain["error"][n]
  stored = lesion.single_deletion_sweep(model, v, (x, y), batch_size=10)
  assert not np.array_equal(stored["error"], swept["error"])  # the statistics matter
  if bn == "recalibrate":  # the intact network keeps its stored statistics
    assert stored["full_error"] == swept["full_error"]
  resume = str(tmp_path / "chunks")
  first = lesion.single_deletion_sweep(model, v, (x, y), batch_size=10, stream_stats=stats, resume_dir=resume)
  kept = sorted(os.listdir(resume))
  assert len(kept) == 1 + 3 and first["error"].tolist() == swept["error"].tolist()  # key + 3 chunks of 10
  os.remove(os.path.join(resume, kept[1]))  # as if killed before its second chunk was written
  calls = []
  real = wavefront._sweep_fn(model, data_mesh(), False, True)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(wavefront, "_sweep_fn", lambda *a: lambda *b: calls.append(1) or real(*b))
    again = lesion.single_deletion_sweep(model, v, (x, y), batch_size=10, stream_stats=stats, resume_dir=resume)
  assert len(calls) == 1 and again["error"].tolist() == swept["error"].tolist()


@pytest.mark.parametrize("downstream", [True, False])
def test_recalibrated_stack_equals_each_lesion_alone(downstream):
  """The stack's program (the deployed prefix's pass shared by every lesion, batches outside the lesions) gives
  each lesion the statistics `recalibrated_stats` gives it alone: deletions, reorderings, scaled branches."""
  model = models.CifarResNet(20)  # 9 blocks, openers 0, 3, 6
  v = _net(model)
  xs = np.stack([_images(70 + i, 8) for i in range(2)])
  n = 9
  scale = np.linspace(1.0, 0.6, n).astype(np.float32)
  ms = np.concatenate([masks.random_deletions(model.layout, 2, seed=5, ks=[1, 3])[0], np.ones((2, n), np.float32)])
  orders = np.tile(np.arange(n), (6, 1))
  orders[4, [4, 5]], orders[5, [7, 8]] = [5, 4], [8, 7]
  ms[4:] = 1
  results = []
  for stack_orders, vectorize in ((None, True), (orders, False)):
    got = jax.jit(lambda m: batchnorm.recalibrated_stats_stack(model, v, m, stack_orders, xs, scale, downstream,
                                                               vectorize))(ms)
    results.append(got)

    def alone(m, o):
      first = batchnorm.first_change(m, o, n) if downstream else None
      return batchnorm.recalibrated_stats(model, v, m * (scale if o is None else jnp.asarray(scale)[o]), o, xs, first)
    ref = jax.jit(jax.vmap(alone))(ms, None if stack_orders is None else jnp.asarray(stack_orders))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
  if downstream:  # the intact rows of the mask stack keep the stored statistics bit for bit
    assert _equal_trees(jax.tree.map(lambda t: np.asarray(t[-1]), results[0]), v["batch_stats"])
