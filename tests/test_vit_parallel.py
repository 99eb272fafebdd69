"""The ViT-only lesions and training options: layers in parallel (Sun et al.), whole-layer deletions, Kendall's
tau over layers, and microbatched training steps, on a 3-layer ViT (6 residual branches)."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.configs import vit as vit_configs
from resnet_ensembles import models
from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion import masks, painters, study as lesion_study
from resnet_ensembles.training import schedules, steps

MODEL = models.VisionTransformer(depth=3, width=32, heads=2, mlp_dim=64)
X = jax.random.normal(jax.random.PRNGKey(3), (4, 32, 32, 3))


@pytest.fixture(scope="module")
def v():
  return jax.jit(MODEL.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


def _apply(v, **kw):
  return np.asarray(jax.jit(lambda v, x: MODEL.apply(v, x, **kw))(v, X))


def _layer(v, h, layer):
  block = lambda h, pos: MODEL.apply(v, h, pos, method=MODEL.block)
  return block(block(h, 2 * layer), 2 * layer + 1)


def test_identity_reads_are_bit_equal_to_the_plain_forward(v):
  np.testing.assert_array_equal(_apply(v, parallel_from=jnp.arange(3)), _apply(v))


def test_a_parallel_span_sums_the_layers_changes_on_one_input(v):
  h0 = MODEL.apply(v, X, method=MODEL.embed)
  h1 = _layer(v, h0, 0)
  # layers 1 and 2 both read h1; the stream leaving them is h1 + (L1(h1) - h1) + (L2(h1) - h1)
  h3 = h1 + (_layer(v, h1, 1) - h1) + (_layer(v, h1, 2) - h1)
  want = MODEL.apply(v, h3, method=MODEL.readout)
  got = _apply(v, parallel_from=jnp.array([0, 1, 1]))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  sequential = MODEL.apply(v, _layer(v, _layer(v, h1, 1), 2), method=MODEL.readout)
  assert np.abs(got - np.asarray(sequential)).max() > 1e-3  # the lesion changes something


def test_configurations_cover_every_span_and_the_middle_variants(v):
  m, o, reads, rows = painters.configurations(4, shuffles=2, seed=0)
  par = [(r["start"], r["length"], r["middle"]) for r in rows if r["variant"] == "parallel"]
  assert par == [(0, 2, False), (1, 2, True), (2, 2, False), (0, 3, False), (1, 3, False), (0, 4, False)]
  np.testing.assert_array_equal(reads[1], [0, 1, 1, 3])
  kinds = [(r["variant"], r.get("start"), r.get("length")) for r in rows if r["variant"] != "parallel"]
  assert kinds == [("skip", 1, 1), ("skip", 1, 2), ("reverse", 1, 2), ("shuffle", 1, 2),  # 2 layers: one shuffle
                   ("full", None, None)]
  i = [r["variant"] for r in rows].index("reverse")
  np.testing.assert_array_equal(o[i], [0, 1, 4, 5, 2, 3, 6, 7])  # layers 1 and 2 swapped, blocks in pairs
  j = [r["variant"] for r in rows].index("skip")
  np.testing.assert_array_equal(m[j], [1, 1, 0, 0, 1, 1, 1, 1])
  assert rows[-1]["full"] and (m[-1] == 1).all() and (o[-1] == np.arange(8)).all()
  for depth in (4, 6):  # shuffles are distinct orders of their span, never the identity
    m, o, reads, rows = painters.configurations(depth, shuffles=3, seed=0)
    for n in range(2, depth - 1):
      shuffled = [o[i].tobytes() for i, r in enumerate(rows) if r["variant"] == "shuffle" and r["length"] == n]
      assert len(set(shuffled)) == len(shuffled) == min(3, math.factorial(n) - 1)
      assert np.arange(2 * depth, dtype=o.dtype).tobytes() not in shuffled
  assert painters.middle_span(6, 2) == (2, 4) and painters.middle_span(6, 4) == (1, 5)
  with pytest.raises(ValueError, match="at least 3 layers"):
    painters.configurations(2)
  with pytest.raises(ValueError, match="must be in 0..l"):
    painters.evaluate(MODEL, v, (np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1, np.int32)),
                      np.ones((1, 6), np.float32), np.arange(6)[None], np.array([[0, 2, 2]]))
  with pytest.raises(ValueError, match="parallel_from must have shape"):
    MODEL.apply(v, X, parallel_from=jnp.arange(2))
  with pytest.raises(ValueError, match="CifarResNet has none"):
    painters.check_painters_model(models.CifarResNet(8))


def test_vmapped_configurations_equal_one_forward_each(v):
  m, o, reads, rows = painters.configurations(3, shuffles=1)
  labels = np.array([0, 1, 2, 3])
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  got = painters.evaluate(MODEL, v, (images, labels), m, o, reads, batch_size=3, networks_per_chunk=2)
  x = data_lib.normalize_for(MODEL, jnp.asarray(images))
  one = jax.jit(lambda a, b, c: MODEL.apply(v, x, block_mask=a, block_order=b, parallel_from=c))  # one program
  logits = [one(a, b, c) for a, b, c in zip(m, o, reads)]
  np.testing.assert_allclose(got["error"], [np.mean(np.argmax(z, -1) != labels) for z in logits])
  assert len({np.asarray(z).round(4).tobytes() for z in logits}) == len(logits)  # every configuration differs


def test_whole_layer_deletions_and_tau_over_layers():
  lay = MODEL.layout
  m, units = masks.unit_deletions(lay)
  assert units == [[0, 1], [2, 3], [4, 5]]
  np.testing.assert_array_equal(m[1], [1, 1, 0, 0, 1, 1])
  stack, _, rows = lesion_study.lesion_stack(lay, "layers")
  assert [r.get("deleted_unit") for r in rows] == [0, 1, 2, None] and stack.shape == (4, 6)
  orders, _, taus = masks.random_reorderings(lay, 4, 0, [1])
  for o, t in zip(orders, taus):  # one swap of two of three layers: tau over layers 1/3 (adjacent) or -1
    layers = o[::2] // 2
    assert sorted(layers.tolist()) == [0, 1, 2] and min(abs(t - 1 / 3), abs(t + 1)) < 1e-9
    assert t == pytest.approx(masks.kendall_tau(layers)) and t != pytest.approx(masks.kendall_tau(o))


def _one_step(model, config, microbatches):
  tx = schedules.make_optimizer(config, schedules.learning_rate_fn(config, 10))
  state = steps.create_state(config, model, tx, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)),
           "label": jnp.asarray(rng.integers(0, 10, 8).astype(np.int32))}
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, sampler=None, label_smoothing=0.1,
                                   microbatches=microbatches))
  return step(state, batch, jax.random.PRNGKey(1))


def test_microbatched_step_equals_the_whole_batch_step():
  config = vit_configs.get_config("tiny")
  # plain SGD: the update is the gradient (Adam's first step, ~lr * sign(g), would amplify rounding)
  config.warmup_epochs, config.optimizer, config.momentum, config.weight_decay, config.learning_rate = 0.0, "sgd", 0.0, 0.0, 1.0
  model = models.from_config(config)
  whole, m1 = _one_step(model, config, 1)
  init = steps.create_state(config, model, optax.identity(), jax.random.PRNGKey(0)).params
  assert max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(init))) > 1e-4
  for microbatches in (2, 4):
    sliced, m = _one_step(model, config, microbatches)
    assert float(m1["loss"]) == pytest.approx(float(m["loss"]), rel=1e-5)
    assert float(m1["error"]) == float(m["error"])
    for a, b in zip(jax.tree.leaves(whole.params), jax.tree.leaves(sliced.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="dividing the per-step batch 8"):
    _one_step(model, config, 3)
  with pytest.raises(ValueError, match="BatchNorm"):
    steps.check_microbatches(models.CifarResNet(8), 2, 128)
