"""The Vision Transformer behind the engines' interface: masks, layer orders, routes and the exact path
decomposition on a 2-layer ViT (4 residual branches), the lesion engines on it, and a few training steps."""
import itertools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from experiments.configs import vit as vit_configs
from resnet_ensembles import models, training
from resnet_ensembles.data import cifar10 as data
from resnet_ensembles.lesion import masks, sweep as lesion
from resnet_ensembles.models import interface, vit
from resnet_ensembles.models.layout import check_block_order
from resnet_ensembles.paths import analysis as paths
from resnet_ensembles.store import checkpoints
from resnet_ensembles.training import schedules, steps

MODEL = models.VisionTransformer(depth=2, width=32, heads=2, mlp_dim=64)
X = jax.random.normal(jax.random.PRNGKey(7), (3, 32, 32, 3))
Y = jnp.array([3, 8, 1])


def _close(a, b, tol=2e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol * float(np.abs(b).max()))


@pytest.fixture(scope="module")
def v():
  """Random init with LayerNorm scales/biases and all biases perturbed (so a skipped one cannot hide)."""
  v = jax.jit(MODEL.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(0)
  fill = lambda path, a: (np.asarray(a) + 0.1 * rng.standard_normal(a.shape).astype(np.float32)
                          if path[-1].key in ("scale", "bias") else np.asarray(a))
  return {"params": jax.tree_util.tree_map_with_path(fill, v["params"])}


def _apply(v, x=X, **kw):
  return jax.jit(lambda v, x: MODEL.apply(v, x, **kw))(v, x)


def test_every_family_implements_the_interface():
  for model in (models.CifarResNet(8), models.PlainNet(8), models.ImageNetResNet(50, width=8), MODEL):
    assert isinstance(model, models.ResidualStack), type(model).__name__
    assert interface.missing_members(model) == []
  assert not isinstance(object(), models.ResidualStack)
  assert interface.missing_members(object()) == list(interface.MEMBERS)
  assert MODEL.layout.num_blocks == 4 and MODEL.layout.stage_openers == () and MODEL.layout.order_unit == 2
  assert MODEL.stream_shape((32, 32)) == (64, 32)
  assert models.CifarResNet(8).stream_shape((32, 32)) == (32, 32, 16)
  assert models.ImageNetResNet(50, width=8).stream_shape((224, 224)) == (56, 56, 32)


def test_all_ones_mask_is_bit_equal_to_no_mask(v):
  full = np.asarray(_apply(v))
  assert np.array_equal(full, np.asarray(_apply(v, block_mask=jnp.ones(4))))
  assert np.array_equal(full, np.asarray(_apply(v, block_mask=jnp.ones((3, 4)))))  # one mask per example


def test_vmap_over_masks_equals_a_loop(v):
  stack = np.concatenate([masks.single_deletions(MODEL.layout)[0], [[0, 1, 1, 0], [0, 0, 0, 0]]]).astype(np.float32)
  vmapped = jax.jit(jax.vmap(lambda m: MODEL.apply(v, X, block_mask=m)))(stack)
  for m, out in zip(stack, vmapped):
    _close(out, _apply(v, block_mask=m))


def test_an_order_moves_whole_layers(v):
  order = vit.layer_order_to_block_order([1, 0])
  assert order.tolist() == [2, 3, 0, 1]
  p = v["params"]
  swapped = {"params": dict(p, block_00=p["block_02"], block_01=p["block_03"], block_02=p["block_00"],
                            block_03=p["block_01"])}
  _close(_apply(v, block_order=order), _apply(swapped))
  assert not np.allclose(_apply(v, block_order=order), _apply(v), atol=1e-4)
  with pytest.raises(ValueError, match="whole units of 2 blocks"):
    MODEL.apply(v, X, block_order=np.array([1, 0, 2, 3]))
  with pytest.raises(ValueError, match="evaluation-time"):
    MODEL.apply(v, X, train=True, block_order=order)
  layout = vit.vit_layout(4, 8, 16, 64)
  orders, _, _ = masks.random_reorderings(layout, num_samples=5, seed=0, swaps=[1, 2])
  for o in orders:
    check_block_order(o, layout)
  assert (orders != np.arange(8)).any(1).all()


def test_deleting_a_sublayer_equals_a_forward_written_without_it(v):
  call = lambda *a, **kw: MODEL.apply(v, *a, **kw)
  for d in range(4):
    h = call(X, method=MODEL.embed)
    for pos in range(4):
      if pos != d:
        h = h + call(h, pos, method=MODEL.branch)
    _close(_apply(v, block_mask=jnp.ones(4).at[d].set(0)), call(h, method=MODEL.readout))
    assert np.array_equal(call(h, d, method=MODEL.deleted), h)


def _loss(v, x, route=None):
  return optax.softmax_cross_entropy_with_integer_labels(MODEL.apply(v, x, grad_route=route), Y).sum()


def test_exact_decomposition_matches_brute_force_over_all_16_paths(v):
  n = 4
  tape = paths.forward_tape(MODEL, v, X, Y)
  g_x, g_h = paths.decompose(tape)
  routes = jnp.array(list(itertools.product([0.0, 1.0], repeat=n)))
  per_path = jax.jit(jax.vmap(jax.grad(lambda x, r: _loss(v, x, r)), in_axes=(None, 0)))(X, routes)
  brute = jnp.stack([per_path[routes.sum(1) == k].sum(0) for k in range(n + 1)])
  _close(g_x, brute)
  _close(g_x.sum(0), jax.jit(jax.grad(lambda x: _loss(v, x)))(X))

  def loss0(xs):  # the model's own path_groups: copy k's gradient is G_k
    return optax.softmax_cross_entropy_with_integer_labels(MODEL.apply(v, xs, path_groups=n + 1)[:3], Y).sum()
  grouped = jax.jit(jax.grad(loss0))(jnp.concatenate([X] * (n + 1))).reshape((n + 1,) + X.shape)
  _close(g_x, grouped)
  norms = paths.decomposition_norms(tape)  # per-image norms of the [tokens, width] stream
  assert g_h.shape == (n + 1, 3, 64, 32) and norms["block0"].shape == (n + 1,)
  _close(norms["block0"], jnp.sqrt(jnp.sum(g_h ** 2, axis=(2, 3))).mean(1))
  assert float(norms["sum_error"]) < 1e-4


def test_lesion_engines_agree_with_direct_forwards(v):
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
  logits = _apply(v, data.normalize(images))
  labels = np.where(rng.random(24) < 0.6, np.argmax(logits, -1), rng.integers(0, 10, 24)).astype(np.int32)
  split = (images, labels)
  stack = np.concatenate([masks.single_deletions(MODEL.layout)[0], [[1, 0, 0, 1], [1, 1, 1, 1]]]).astype(np.float32)
  direct = lambda **kw: float(np.mean(np.argmax(_apply(v, data.normalize(images), **kw), -1) != labels))
  out = lesion.evaluate(MODEL, v, split, stack, batch_size=10)
  _close(out["error"], [direct(block_mask=m) for m in stack])
  wave = lesion.single_deletion_sweep(MODEL, v, split, batch_size=10)
  _close(wave["error"], out["error"][:4])
  _close(wave["full_error"], out["error"][-1])
  orders = np.stack([np.arange(4), vit.layer_order_to_block_order([1, 0])])
  by_order = lesion.evaluate(MODEL, v, split, orders=orders, batch_size=10)
  _close(by_order["error"], [direct(block_order=o) for o in orders])
  with pytest.raises(ValueError, match="does not apply to VisionTransformer"):
    lesion.evaluate(MODEL, v, split, stack, bn="recalibrate", recal_split=split)
  with pytest.raises(ValueError, match="does not apply"):
    paths.analyze(MODEL, v, images, labels, ml_collections.ConfigDict(dict(bn="batch")))


def test_label_smoothing_and_adamw():
  logits, labels = jnp.array([[2.0, 0.0, -1.0]]), jnp.array([0])
  target = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
  _close(steps.cross_entropy(logits, labels, 0.1), -np.sum(target * jax.nn.log_softmax(logits)[0]))
  assert steps.cross_entropy(logits, labels) == optax.softmax_cross_entropy_with_integer_labels(logits, labels)[0]
  c = vit_configs.get_config("tiny")
  tx = schedules.make_optimizer(c, lambda step: 0.5)
  params = {"pos_embed": jnp.ones((1, 2, 2)), "fc": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  assert float(updates["fc"]["kernel"][0, 0]) == pytest.approx(-0.5 * c.weight_decay)  # decoupled decay
  assert float(jnp.abs(updates["fc"]["bias"]).max()) == 0 and float(jnp.abs(updates["pos_embed"]).max()) == 0
  c.optimizer = "lamb"
  with pytest.raises(ValueError, match="optimizer must be one of"):
    schedules.make_optimizer(c, lambda step: 0.5)
  with pytest.raises(ValueError, match="size in"):
    vit_configs.get_config("s5")


def test_a_few_training_steps_resume_and_load(tmp_path):
  rng = np.random.default_rng(0)
  split = lambda n: (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32))
  small = {"train": split(96), "test": split(40)}
  c = vit_configs.get_config("tiny")
  c.batch_size, c.eval_batch_size, c.num_epochs, c.log_every_steps, c.progress = 32, 40, 2, 1, False
  c.max_steps = 2
  first = training.train_and_evaluate(c, str(tmp_path), data=small)
  assert first["step"] == 2
  c.max_steps = -1
  done = training.train_and_evaluate(c, str(tmp_path), data=small)  # resumes at step 2
  assert done["step"] == 6
  starts = [json.loads(l)["step"] for l in open(os.path.join(tmp_path, "starts.jsonl"))]
  assert starts == [0, 2]
  model, variables, config = checkpoints.load_trained(str(tmp_path))
  assert model == models.VisionTransformer(depth=2, width=32, heads=2, mlp_dim=64) and variables["batch_stats"] == {}
  err = float(np.mean(np.argmax(_apply(variables, data.normalize(small["test"][0])), -1) != small["test"][1]))
  assert err == pytest.approx(done["test_error"])
