"""Path analysis: distribution, routed gradients and the exact per-length decomposition on tiny nets."""
import itertools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from experiments.configs.paths import get_config
from resnet_ensembles import models
from resnet_ensembles.paths import analysis as paths
from resnet_ensembles.plots import paths as plots

X = jax.random.normal(jax.random.PRNGKey(7), (2, 32, 32, 3))
Y = jnp.array([3, 8])


def _init(model, seed=0):
  """Random init with perturbed BatchNorm statistics (so stored-statistics bugs cannot hide)."""
  v = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(seed)
  perturb = lambda l: np.asarray(l) * np.exp(0.2 * rng.standard_normal(l.shape)).astype(np.float32)
  return {"params": v["params"], "batch_stats": jax.tree.map(perturb, v["batch_stats"])}


def _loss(model, v, x, route=None, train=False):
  kw = dict(mutable=["batch_stats"]) if train else {}
  out = model.apply(v, x, train=train, grad_route=route, **kw)
  logits = out[0] if train else out
  return optax.softmax_cross_entropy_with_integer_labels(logits, Y).sum()


def _close(a, b, tol=2e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol * float(np.abs(b).max()))


NETS = {}


def _net(depth, variant="preact"):
  if (depth, variant) not in NETS:
    model = models.CifarResNet(depth, variant)
    NETS[depth, variant] = model, _init(model)
  return NETS[depth, variant]


@pytest.mark.parametrize("n", [1, 3, 54, 3000])
def test_distribution_is_binomial_and_finite(n):
  d = paths.path_length_distribution(n)
  k = np.arange(n + 1)
  assert d["counts"] == [math.comb(n, i) for i in k] and sum(d["counts"]) == 2 ** n
  assert np.all(np.isfinite(d["frequency"])) and np.all(np.isfinite(d["log_frequency"]))
  np.testing.assert_allclose(d["frequency"], stats.binom.pmf(k, n, 0.5), rtol=1e-12, atol=0)
  assert abs(d["frequency"].sum() - 1) < 1e-12
  mid = n // 2  # the log frequency stays exact where the count itself overflows a float
  assert abs(d["log_frequency"][mid] - (math.log(math.comb(n, mid)) - n * math.log(2))) < 1e-9


def test_bad_inputs_are_clear():
  with pytest.raises(ValueError, match="positive integer"):
    paths.path_length_distribution(0)
  with pytest.raises(ValueError, match="plain net"):
    paths.check_model(models.PlainNet(8))
  with pytest.raises(ValueError, match="plain net"):
    paths.forward_tape(models.PlainNet(8), {}, X, Y)
  with pytest.raises(ValueError, match="0..3"):
    paths.sample_routes(jax.random.PRNGKey(0), 3, [4])
  with pytest.raises(ValueError, match="0..3"):
    paths.sample_routes(jax.random.PRNGKey(0), 3, [-1])
  with pytest.raises(ValueError, match="non-negative"):
    paths.effective_range([1.0, -1.0])
  with pytest.raises(ValueError, match="multiple"):
    paths.sample_path_gradients(models.CifarResNet(8), None, np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4, np.int32),
                                samples_per_length=3, num_batches=2, batch_size=2)


def test_sampled_routes_have_exactly_k_residual_blocks():
  lengths = np.repeat(np.arange(10), 20)
  routes = np.asarray(paths.sample_routes(jax.random.PRNGKey(1), 9, lengths))
  assert set(np.unique(routes)) <= {0.0, 1.0}
  np.testing.assert_array_equal(routes.sum(1), lengths)
  assert len({tuple(r) for r in routes[lengths == 4]}) > 10  # random positions, not one fixed route


def test_routed_forward_equals_unrouted_forward():
  model, v = _net(8)
  full = jax.jit(model.apply)(v, X)  # equal up to float rounding of differently fused programs
  _close(paths.forward_tape(model, v, X, Y).logits, full, 1e-6)
  routed = jax.jit(lambda x, r: model.apply(v, x, grad_route=r))(X, jnp.array([1., 0, 1]))
  _close(routed, full, 1e-6)


def test_one_block_routes_are_branch_and_skip_vjps():
  model, v = _net(8)
  tape = paths.forward_tape(model, v, X, Y)

  @jax.jit
  def pairs(tape):  # each block alone: all-residual = branch VJP, all-skip = shortcut VJP
    out, h = [], model.apply(v, X, method=model.embed)
    for pos in range(3):
      nxt = model.apply(v, h, pos, method=model.block)
      ct = jax.random.normal(jax.random.PRNGKey(pos), nxt.shape)
      _, branch_vjp = jax.vjp(lambda h: model.apply(v, h, pos, method=model.branch), h)
      _, skip_vjp = jax.vjp(lambda h: model.apply(v, h, pos, method=model.shortcut), h)
      out += [(tape.block_vjps[pos]((0 * ct, ct))[0], branch_vjp(ct)[0]),
              (tape.block_vjps[pos]((ct, 0 * ct))[0], skip_vjp(ct)[0])]
      h = nxt
    return out
  for ours, ref in pairs(tape):
    _close(ours, ref)


def test_all_residual_and_all_skip_routes():
  model, v = _net(8)
  tape = paths.forward_tape(model, v, X, Y)

  @jax.jit
  def references(top):
    hs = [model.apply(v, X, method=model.embed)]
    for pos in range(3):
      hs.append(model.apply(v, hs[-1], pos, method=model.block))
    _, embed_vjp = jax.vjp(lambda x: model.apply(v, x, method=model.embed), X)
    ct = top
    for pos in reversed(range(3)):  # the chain of branch VJPs at the full net's activations
      ct = jax.vjp(lambda h: model.apply(v, h, pos, method=model.branch), hs[pos])[1](ct)[0]
    skips = lambda h: model.apply(v, model.apply(v, model.apply(v, h, 0, method=model.shortcut), 1,
                                                  method=model.shortcut), 2, method=model.shortcut)
    return embed_vjp(ct)[0], embed_vjp(jax.vjp(skips, hs[0])[1](top)[0])[0]  # ... and the identity path
  all_branch, identity = references(tape.top)
  _close(paths.routed_gradient(tape, jnp.ones(3))[0], all_branch)
  _close(paths.routed_gradient(tape, jnp.zeros(3))[0], identity)


@pytest.mark.parametrize("depth,variant", [(8, "preact"), (8, "original")])
def test_routed_gradient_is_the_models_grad_route(depth, variant):
  model, v = _net(depth, variant)
  n = model.layout.num_blocks
  tape = paths.forward_tape(model, v, X, Y)
  routes = paths.sample_routes(jax.random.PRNGKey(5), n, [1, n // 2, n - 1])
  grads = jax.jit(jax.vmap(jax.grad(lambda x, r: _loss(model, v, x, r)), in_axes=(None, 0)))(X, routes)
  for route, grad in zip(routes, grads):
    _close(paths.routed_gradient(tape, route)[0], grad)
  _close(paths.full_gradient(tape)[0], jax.jit(jax.grad(lambda x: _loss(model, v, x)))(X))


@pytest.mark.parametrize("depth,variant,train", [(14, "preact", False), (8, "original", False),
                                                 (8, "preact", True)])
def test_decomposition_sums_to_gradient_and_matches_brute_force(depth, variant, train):
  model, v = _net(depth, variant)
  n = model.layout.num_blocks
  tape = paths.forward_tape(model, v, X, Y, train=train)
  g_x, g_h = paths.decompose(tape)
  assert g_x.shape == (n + 1,) + X.shape
  routes = jnp.array(list(itertools.product([0.0, 1.0], repeat=n)))  # all 2^n paths
  per_path = jax.jit(jax.vmap(jax.grad(lambda x, r: _loss(model, v, x, r, train)), in_axes=(None, 0)))(X, routes)
  brute = jnp.stack([per_path[routes.sum(1) == k].sum(0) for k in range(n + 1)])
  _close(g_x, brute)
  _close(g_x.sum(0), jax.jit(jax.grad(lambda x: _loss(model, v, x, None, train)))(X))
  _close(g_h.sum(0), paths.full_gradient(tape)[1])
  _close(g_x[0], paths.routed_gradient(tape, jnp.zeros(n))[0])  # one path of each extreme length


def test_decomposition_equals_models_path_groups():
  model, v = _net(8)
  n = model.layout.num_blocks

  def loss0(xs):  # loss on copy 0 only; copy k's gradient is G_k
    logits = model.apply(v, xs, path_groups=n + 1)[:len(X)]
    return optax.softmax_cross_entropy_with_integer_labels(logits, Y).sum()
  grouped = jax.jit(jax.grad(loss0))(jnp.concatenate([X] * (n + 1))).reshape((n + 1,) + X.shape)
  _close(paths.decompose(paths.forward_tape(model, v, X, Y))[0], grouped)


def test_vmap_over_routes_equals_a_loop():
  model, v = _net(8)
  tape = paths.forward_tape(model, v, X, Y)
  routes = paths.sample_routes(jax.random.PRNGKey(3), 3, [0, 1, 1, 2, 2, 3])
  img, blk = paths.routed_norms(tape, routes)
  for i, r in enumerate(routes):
    gx, gh = paths.routed_gradient(tape, r)
    _close(img[i], paths.mean_norm(gx))
    _close(blk[i], paths.mean_norm(gh))


def test_effective_range_on_a_hand_made_curve():
  curve = [0.0, 1.0, 5.0, 3.0, 0.5, 0.5]  # total 10
  r = paths.effective_range(curve)
  assert (r["lo"], r["hi"]) == (1, 3) and abs(r["carried"] - 0.9) < 1e-12
  assert abs(r["path_fraction"] - sum(math.comb(5, k) for k in (1, 2, 3)) / 32) < 1e-12
  assert (paths.effective_range(curve, 0.5)["lo"], paths.effective_range(curve, 0.5)["hi"]) == (2, 2)
  assert (paths.effective_range(curve, 1.0)["lo"], paths.effective_range(curve, 1.0)["hi"]) == (1, 5)


def test_exponential_fit_recovers_a_geometric_curve():
  fit = paths.exponential_fit(3.0 * 0.6 ** np.arange(12))
  assert abs(fit["factor_per_block"] - 0.6) < 1e-9 and abs(fit["r2"] - 1) < 1e-9 and fit["lengths"] == 12
  noisy = paths.exponential_fit([1.0, 0.0, 0.5, np.nan, 0.1, 0.2])  # zeros / NaN (underflow) are left out
  assert noisy["lengths"] == 4 and noisy["factor_per_block"] < 1 and noisy["r2"] < 1
  with pytest.raises(ValueError, match="at least 3"):
    paths.exponential_fit([1.0, 0.0, 0.5])


def test_analysis_sampled_and_exact_agree_on_the_unique_extreme_paths(tmp_path):
  model, v = _net(8)
  images = np.asarray(jax.random.randint(jax.random.PRNGKey(0), (6, 32, 32, 3), 0, 256), np.uint8)
  config = get_config("quick")
  config.update(samples_per_length=5, num_batches=1, batch_size=4, route_chunk=8)
  result = json.loads(json.dumps(paths.analyze(model, v, images, np.arange(6, dtype=np.int32), config)))
  s, e = result["sampled"], result["exact"]  # both on the same batch (same seed)
  assert len(s["image_mean"]) == 4 and e["sum_error"] < 1e-5
  for k in (0, 3):  # one path of length 0 and one of length n: no sampling noise, equal to G_k
    assert s["image_std"][k] < 1e-6 * s["image_mean"][k]
    _close(s["image_mean"][k], e["image"][k], 1e-5)
    _close(s["block0_mean"][k], e["block0"][k], 1e-5)
  _close(result["total"]["image"], np.array(s["image_mean"]) * stats.binom.pmf(np.arange(4), 3, 0.5), 1e-12)
  assert 0 <= result["effective_range"]["image"]["lo"] <= result["effective_range"]["image"]["hi"] <= 3
  # the decay factor against a least-squares line fitted here (numpy, natural log), not exponential_fit itself
  mean = np.asarray(s["image_mean"])
  slope, intercept = np.polyfit(np.arange(4), np.log(mean), 1)
  decay = result["decay"]["image"]
  assert decay["lengths"] == 4 and abs(decay["factor_per_block"] - np.exp(slope)) < 1e-9 * np.exp(slope)
  assert abs(decay["log10_intercept"] - intercept / np.log(10)) < 1e-9
  resid = np.log(mean) - (intercept + slope * np.arange(4))
  assert abs(decay["r2"] - (1 - np.sum(resid ** 2) / np.sum((np.log(mean) - np.log(mean).mean()) ** 2))) < 1e-9
  out = plots.save(result, str(tmp_path / "paths.png"))  # the figure is a function of the JSON
  assert os.path.getsize(out) > 10_000
  config.bn = "train"
  with pytest.raises(ValueError, match="bn must be"):
    paths.analyze(model, v, images, np.arange(6), config)


def test_figure_of_a_54_block_result_overlays_the_paper(tmp_path):
  d = paths.path_length_distribution(54)
  mean = np.exp(-0.3 * np.arange(55))  # a hand-made decaying one-path curve
  total = (d["frequency"] * mean).tolist()
  result = {"num_blocks": 54, "distribution": {k: np.asarray(v).tolist() for k, v in d.items()},
            "sampled": {"samples_per_length": 1, "image_mean": mean, "image_std": 0 * mean,
                        "block0_mean": 2 * mean, "block0_std": 0 * mean},
            "total": {"image": total}, "effective_range": {"image": paths.effective_range(total)},
            "exact": {"image": mean, "block0": mean, "sum_error": 0.0}}
  assert os.path.getsize(plots.save(result, str(tmp_path / "p.png"))) > 10_000
  from resnet_ensembles import paper
  window = paper.paths_window()
  assert window["num_blocks"] == 54

  def paper_lines(result):
    ax = plots.figure(result).axes[2]  # (c): total gradient magnitude per length
    return [l for l in ax.lines if np.size(l.get_xdata()) and l.get_linestyle() == "--"]
  drawn = paper_lines(result)  # the paper's window 5-17 as two dashed verticals at its edges
  assert sorted(float(l.get_xdata()[0]) for l in drawn) == [window["lo"] - 0.5, window["hi"] + 0.5]
  assert [l.get_label() for l in drawn][0].startswith("paper")
  small = dict(result, num_blocks=3, distribution={k: np.asarray(v)[:4].tolist() for k, v in d.items()},
               sampled={k: (v[:4] if hasattr(v, "__len__") else v) for k, v in result["sampled"].items()},
               total={"image": total[:4]}, effective_range={"image": paths.effective_range(total[:4])},
               exact={"image": mean[:4], "block0": mean[:4], "sum_error": 0.0})
  labels = [l.get_label() for l in plots.figure(small).axes[2].lines]
  assert not paper_lines(small) and any(l.startswith("paper (ResNet-110, 54 blocks): effective paths 5-17")
                                        for l in labels), labels


def test_config_variants():
  assert get_config().samples_per_length == 100 and get_config("paper").samples_per_length == 1000
  assert get_config("quick,batch_bn").bn == "batch"
  with pytest.raises(ValueError, match="unknown paths config modifier"):
    get_config("fast")
