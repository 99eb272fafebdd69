import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import cifar10
from resnet_ensembles.data import cifar10 as data
from resnet_ensembles import models
from resnet_ensembles.models import samplers
from resnet_ensembles import training as train
from resnet_ensembles.models.layout import cifar_layout


def _cfg(kind, **kw):
  return ml_collections.ConfigDict(dict(kind=kind, p_L=0.5, num_active=0, scale_at_test=False, **kw))


def test_stochastic_depth_survival_rates():
  lay = cifar_layout(56)  # 27 blocks
  p = samplers.survival_probabilities(27, 0.5)
  assert p[0] == pytest.approx(1 - 0.5 / 27) and p[-1] == pytest.approx(0.5)
  sample = jax.jit(jax.vmap(samplers.make_sampler(_cfg("stochastic_depth"), lay)))
  masks = np.asarray(sample(jax.random.split(jax.random.PRNGKey(0), 4000))[0])
  assert set(np.unique(masks)) <= {0.0, 1.0}
  # 4000 draws: 4 standard errors of a Bernoulli(0.5) mean is 0.032.
  np.testing.assert_allclose(masks.mean(0), p, atol=0.032)


@pytest.mark.parametrize("kind", ["short_path_forward", "short_path_route"])
def test_short_path_has_exactly_k(kind):
  lay = cifar_layout(110)
  assert samplers.default_num_active(54) == 23
  sample = jax.vmap(samplers.make_sampler(_cfg(kind), lay))
  mask, route = sample(jax.random.split(jax.random.PRNGKey(1), 200))
  assert (mask is None) == (kind == "short_path_route")
  if kind == "short_path_route":  # [draws, 2, n]: branch gates (K ones), skip gates (all ones)
    np.testing.assert_array_equal(route[:, 1], 1.0)
  drawn = np.asarray(mask if kind == "short_path_forward" else route[:, 0])
  np.testing.assert_array_equal(drawn.sum(1), 23)
  assert drawn.mean(0).min() > 0.2  # every block gets trained sometimes


def test_bad_sampler_configs_are_clear():
  lay = cifar_layout(20)
  with pytest.raises(ValueError, match="train_mask.kind"):
    samplers.make_sampler(_cfg("dropout"), lay)
  with pytest.raises(ValueError, match="num_active must be in 1..9"):
    cfg = _cfg("short_path_forward")
    cfg.num_active = 10
    samplers.make_sampler(cfg, lay)


def test_all_ones_sampler_trains_identically(cifar, tmp_path):
  small = {"train": data.subset(cifar["train"], 128), "test": data.subset(cifar["test"], 100, 1)}
  results = []
  for i, kind in enumerate(["none", "stochastic_depth"]):
    c = cifar10.get_config("resnet8")
    c.batch_size, c.num_epochs, c.progress = 32, 1, False
    c.train_mask.kind, c.train_mask.p_L = kind, 1.0  # p_L = 1: every block always survives
    results.append(train.train_and_evaluate(c, str(tmp_path / str(i)), data=small))
  # Same arithmetic, but a different compiled program (the traced 1.0 factors change XLA's fusion),
  # so equality holds to float rounding rather than bit for bit.
  for a, b in zip(jax.tree.leaves(results[0]["state"]), jax.tree.leaves(results[1]["state"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert results[0]["test_error"] == results[1]["test_error"]


def test_test_time_scaling_is_the_expectation_of_a_block():
  model = models.CifarResNet(8)
  v = models.init_variables(model, jax.random.PRNGKey(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  h = model.apply(v, x, method=model.embed)
  p = 0.7
  expectation = p * model.apply(v, h, 1, mask=1.0, method=model.block) + (1 - p) * model.apply(
      v, h, 1, mask=0.0, method=model.block)
  np.testing.assert_allclose(model.apply(v, h, 1, mask=p, method=model.block), expectation, rtol=1e-5, atol=1e-6)
  mask = samplers.test_time_mask(_cfg("stochastic_depth"), model.layout)
  np.testing.assert_allclose(mask, [1 - 0.5 / 3, 1 - 1 / 3, 0.5], rtol=1e-6)
  # The whole network with the scaled mask is the block-wise expectation composed.
  g = h
  for pos in range(3):
    g = mask[pos] * model.apply(v, g, pos, mask=1.0, method=model.block) + (1 - mask[pos]) * model.apply(
        v, g, pos, mask=0.0, method=model.block)
  np.testing.assert_allclose(model.apply(v, x, block_mask=mask), model.apply(v, g, method=model.readout),
                             rtol=1e-5, atol=1e-5)


def test_per_example_stochastic_depth():
  lay = cifar_layout(20)  # 9 blocks
  cfg = _cfg("stochastic_depth", per_example=True)
  masks = np.asarray(jax.jit(samplers.make_sampler(cfg, lay, batch_size=4000))(jax.random.PRNGKey(2))[0])
  assert masks.shape == (4000, 9)
  np.testing.assert_allclose(masks.mean(0), samplers.survival_probabilities(9, 0.5), atol=0.032)
  with pytest.raises(ValueError, match="needs the batch size"):
    samplers.make_sampler(cfg, lay)
  for kind in ("none", "short_path_forward"):
    with pytest.raises(ValueError, match="stochastic_depth only"):
      samplers.make_sampler(_cfg(kind, per_example=True), lay, batch_size=8)
  # Row i of a [B, n] mask acts on example i alone: the same as that example with its own [n] mask.
  model = models.CifarResNet(8)
  v = models.init_variables(model, jax.random.PRNGKey(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 3))
  rows = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
  apply = jax.jit(lambda x, m: model.apply(v, x, block_mask=m))
  one_by_one = jnp.concatenate([apply(x[i:i + 1], rows[i]) for i in range(3)])
  np.testing.assert_allclose(apply(x, rows), one_by_one, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match=r"block_mask must have shape \(3,\) or \(batch, n\)"):
    model.apply(v, x, block_mask=rows[:2])


def test_per_example_stochastic_depth_trains(cifar, tmp_path):
  small = {"train": data.subset(cifar["train"], 64), "test": data.subset(cifar["test"], 50, 1)}
  c = cifar10.get_config("resnet8,sd")
  c.batch_size, c.num_epochs, c.progress, c.train_mask.per_example = 32, 1, False, True
  result = train.train_and_evaluate(c, str(tmp_path / "per_example"), data=small)
  assert result["step"] == 2 and np.isfinite(result["test_loss"])
  # The same run without masks (same seed, data and order): the per-example masks changed the training.
  c.train_mask.kind, c.train_mask.per_example = "none", False
  plain = train.train_and_evaluate(c, str(tmp_path / "none"), data=small)
  moved = lambda r: np.concatenate([np.ravel(a) for a in jax.tree.leaves(r["state"].params)])
  start = moved(plain) - moved(result)
  assert np.abs(start).max() > 1e-3, "per-example stochastic depth trained exactly like no masks"


def test_forward_short_path_scales_branches_by_k_over_n_at_test():
  lay = cifar_layout(20)  # 9 blocks: default K = 4 (default_num_active)
  cfg = _cfg("short_path_forward")
  assert samplers.test_time_mask(cfg, lay) is None  # scale_at_test off: every branch at full strength
  cfg.scale_at_test = True
  k = samplers.default_num_active(9)
  assert k == 4
  np.testing.assert_allclose(samplers.test_time_mask(cfg, lay), np.full(9, 4 / 9), rtol=1e-7)
  cfg.num_active = 3
  np.testing.assert_allclose(samplers.test_time_mask(cfg, lay), np.full(9, 1 / 3), rtol=1e-7)
  assert samplers.test_time_mask(cfg, cifar_layout(110)).tolist() == [np.float32(3 / 54)] * 54
  cfg.kind = "short_path_route"  # routes only change the backward pass: nothing to scale
  assert samplers.test_time_mask(cfg, lay) is None


def test_two_row_route_gates_branch_and_skip_gradients():
  """[2, n] routes: all-ones gates are plain backprop; branch gates 0 leave those blocks' parameters without
  gradient but still pass gradient through their skips; [r; 1 - r] is the one-row route r."""
  model = models.CifarResNet(20)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  v = models.init_variables(model, jax.random.PRNGKey(0))
  def grads(route):
    f = lambda p, x: jnp.sum(model.apply({"params": p, "batch_stats": v["batch_stats"]}, x, grad_route=route) ** 2)
    return jax.grad(f, argnums=(0, 1))(v["params"], x)
  n = model.layout.num_blocks
  plain, ones = grads(None), grads(jnp.ones((2, n)))
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(ones)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  active = jnp.array([1.0, 0, 1, 0, 0, 1, 0, 0, 1])
  (p_grads, x_grad) = grads(jnp.stack([active, jnp.ones(n)]))
  for i in range(n):
    norm = sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(p_grads[f"block_{i:02d}"]))
    assert (norm > 0) == bool(active[i]), (i, norm)
  assert float(jnp.abs(x_grad).sum()) > 0
  r = jnp.array([1.0, 0, 0, 1, 0, 0, 0, 1, 0])
  for a, b in zip(jax.tree.leaves(grads(r)), jax.tree.leaves(grads(jnp.stack([r, 1 - r])))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
