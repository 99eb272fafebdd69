"""Per-example path usage (resnet_ensembles/paths/per_example.py) on tiny networks (3 blocks)."""
import json
import math
import os
import re
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from resnet_ensembles import models
from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.lesion.wavefront import wavefront_logits
from resnet_ensembles.paths import analysis as paths
from resnet_ensembles.paths import per_example as pe, per_example_report as pe_report, per_example_stats as pe_stats
from resnet_ensembles.plots import per_example as plots

X = jax.random.normal(jax.random.PRNGKey(7), (3, 32, 32, 3))
Y = jnp.array([3, 8, 1])
MODEL = models.CifarResNet(8)  # 3 blocks


def _variables(seed=0):
  v = jax.jit(MODEL.init)(jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(seed)  # perturbed BatchNorm statistics, so stored-statistics bugs cannot hide
  perturb = lambda l: np.asarray(l) * np.exp(0.2 * rng.standard_normal(l.shape)).astype(np.float32)
  return {"params": v["params"], "batch_stats": jax.tree.map(perturb, v["batch_stats"])}


V = _variables()


def _close(a, b, tol=2e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol * float(np.abs(b).max()))


def test_mean_over_images_of_profiles_is_decomposition_norms():
  """decomposition_norms' per-length value is the mean over images of each image's ||G_k||."""
  tape = paths.forward_tape(MODEL, V, X, Y)
  prof, batch = pe.exact_profiles(tape), paths.decomposition_norms(tape)
  assert prof["image"].shape == (3, 4) and prof["block0"].shape == (3, 4)
  for w in ("image", "block0"):
    _close(prof[w].mean(0), batch[w])
    _close(prof[f"full_{w}"].mean(), batch[f"full_{w}"])
  assert float(prof["sum_error"].max()) < 1e-5


def test_per_image_parts_sum_to_that_images_own_gradient():
  """Each image's G_k sum to the gradient of its own loss, computed on that image alone; its profile does
  not depend on the other images of the batch (inference BatchNorm)."""
  tape = paths.forward_tape(MODEL, V, X, Y)
  g_x, _ = paths.decompose(tape)
  prof = pe.exact_profiles(tape)
  own = jax.jit(jax.grad(lambda x, y: optax.softmax_cross_entropy_with_integer_labels(MODEL.apply(V, x), y).sum()))
  for b in range(3):
    _close(g_x[:, b].sum(0), own(X[b:b + 1], Y[b:b + 1])[0])
    alone = pe.exact_profiles(paths.forward_tape(MODEL, V, X[b:b + 1], Y[b:b + 1]))
    _close(prof["image"][b], alone["image"][0])
    _close(prof["block0"][b], alone["block0"][0])
    _close(jnp.sqrt(jnp.sum(g_x[:, b] ** 2, axis=(1, 2, 3))), prof["image"][b])


def _zero_branches(v, keep=()):
  """Every branch's last convolution zeroed (except blocks in `keep`): the branch outputs 0 for every input
  and its VJP w.r.t. its input is 0, so a path through it carries no gradient."""
  params = jax.tree.map(np.asarray, v["params"])
  params = {k: ({**p, "conv2": {"kernel": np.zeros_like(p["conv2"]["kernel"])}}
                if k.startswith("block_") and int(k[6:]) not in keep else p) for k, p in params.items()}
  return {"params": params, "batch_stats": v["batch_stats"]}


def test_zeroed_branches_leave_only_the_skip_path():
  v = _zero_branches(V)
  prof = pe.exact_profiles(paths.forward_tape(MODEL, v, X, Y))
  assert np.all(np.asarray(prof["image"])[:, 1:] == 0) and np.all(np.asarray(prof["image"])[:, 0] > 0)
  _close(prof["image"][:, 0], prof["full_image"])  # the identity path is the whole gradient
  s = pe.summarize(prof["image"])
  assert s["lo"].tolist() == [0, 0, 0] and s["hi"].tolist() == [0, 0, 0] and s["peak"].tolist() == [0, 0, 0]
  np.testing.assert_array_equal(s["mean_length"], 0.0)
  np.testing.assert_allclose(s["carried"], 1.0)
  np.testing.assert_allclose(s["path_fraction"], 1 / 8)
  one = pe.exact_profiles(paths.forward_tape(MODEL, _zero_branches(V, keep=(1,)), X, Y))  # one live branch
  assert np.all(np.asarray(one["image"])[:, 2:] == 0) and np.all(np.asarray(one["image"])[:, 1] > 0)
  assert np.all(pe.summarize(one["image"], 1.0)["hi"] <= 1)


def test_vectorised_windows_equal_effective_range_one_image_at_a_time():
  rng = np.random.default_rng(0)
  curves = [rng.exponential(size=16) for _ in range(40)]
  curves += [np.exp(-0.5 * (np.arange(16) - c) ** 2 / s ** 2) for c in (0, 5, 15) for s in (0.5, 2, 6)]
  curves += [np.zeros(16), np.eye(16)[7], np.ones(16), np.r_[np.ones(8), np.zeros(8)],  # ties and degenerate rows
             np.r_[1.0, 2.0, 2.0, 1.0, np.zeros(12)], np.r_[np.zeros(10), 3.0, 0.0, 0.0, 3.0, 0.0, 0.0]]
  curves = np.stack(curves)
  for share in (0.5, 0.9, 1.0):
    vec = pe.windows(curves, share)
    for b, c in enumerate(curves):
      ref = paths.effective_range(c, share)
      assert (vec["lo"][b], vec["hi"][b]) == (ref["lo"], ref["hi"]), (b, share)
      assert abs(vec["carried"][b] - ref["carried"]) < 1e-12
      assert abs(vec["path_fraction"][b] - ref["path_fraction"]) < 1e-12
  hand = pe.summarize(np.array([[0.0, 1.0, 5.0, 3.0, 0.5, 0.5]]))  # the hand-made curve of test_paths
  assert (hand["lo"][0], hand["hi"][0], hand["width"][0], hand["peak"][0]) == (1, 3, 3, 2)
  assert abs(hand["mean_length"][0] - (1 + 10 + 9 + 2 + 2.5) / 10) < 1e-12
  with pytest.raises(ValueError, match="non-negative"):
    pe.windows(np.array([[1.0, -1.0]]))


def test_sampled_profiles_agree_with_routed_norms_and_the_unique_extreme_paths():
  tape = paths.forward_tape(MODEL, V, X, Y)
  lengths = np.repeat(np.arange(4), 3)
  routes = paths.sample_routes(jax.random.PRNGKey(1), 3, lengths)
  s, exact = pe.sampled_profiles(tape, routes), pe.exact_profiles(tape)
  img, blk = paths.routed_norms(tape, routes)
  _close(s["image_route_norms"].mean(1), img)  # the batch engine's per-route value: the mean over images
  _close(s["block0_route_norms"].mean(1), blk)
  freq = paths.path_length_distribution(3)["frequency"]
  for k in (0, 3):  # one path of each extreme length: the sampled profile is freq(k) x ||G_k||
    _close(s["image"][:, k], freq[k] * exact["image"][:, k], 1e-5)


def test_rank_correlation_and_flip_counts():
  x = np.arange(50.0)
  c = pe_stats.rank_correlation(x, x ** 3, control=np.sin(x), n_resamples=200)
  assert c["spearman"] == pytest.approx(1.0) and c["bootstrap_ci"][0] > 0.99
  assert c["partial_given_control"]["rho"] == pytest.approx(1.0)
  y = np.random.default_rng(0).permutation(x) + 0.5 * x  # a moderate correlation, rho ~ 0.5
  r = pe_stats.rank_correlation(x, y, n_resamples=200, seed=3)
  # Fisher's z: atanh(rho) +- 1.95996 sqrt(1.06 / (50 - 3)) = +- 0.29434, mapped back through tanh
  assert np.arctanh(r["fisher_z_ci"]) == pytest.approx(np.arctanh(r["spearman"]) + np.array([-0.29434, 0.29434]),
                                                       abs=1e-4)
  # the bootstrap: the 2.5th and 97.5th percentiles of scipy's rho over the same 200 seeded resamples (drawn
  # 100 at a time, as documented), one resample at a time
  rng = np.random.default_rng(3)
  idx = np.concatenate([rng.integers(0, 50, (100, 50)) for _ in range(2)])
  boots = [stats.spearmanr(x[i], y[i])[0] for i in idx]
  assert r["bootstrap_ci"] == pytest.approx(np.percentile(boots, [2.5, 97.5]).tolist(), abs=1e-12)
  assert 0.2 < r["spearman"] < 0.8 and r["bootstrap_ci"][1] - r["bootstrap_ci"][0] > 0.1
  full, labels = np.array([0, 1, 2]), np.array([0, 1, 0])
  dels = np.array([[0, 2, 2], [1, 1, 0], [0, 1, 2]])
  f = pe_stats.flip_counts(full, dels, labels)
  assert f["flips"].tolist() == [1, 1, 1] and f["breaks"].tolist() == [1, 1, 0]
  np.testing.assert_allclose(f["per_deletion_error"], [2 / 3, 1 / 3, 1 / 3])
  assert pe_stats.deciles(np.arange(20.0)).tolist() == [i // 2 for i in range(20)]


def test_dataset_chunks_resume_analysis_and_figure(tmp_path):
  images = np.asarray(jax.random.randint(jax.random.PRNGKey(0), (24, 32, 32, 3), 0, 256), np.uint8)
  labels = np.arange(24, dtype=np.int32) % 10
  kw = dict(batch_size=4, chunk_size=8, chunk_dir=str(tmp_path / "chunks"), tag="_t")
  prof = pe.profile_dataset(MODEL, V, images, labels, **kw)
  assert prof["image"].shape == (24, 4) and prof["computed_images"] == 24 and len(os.listdir(tmp_path / "chunks")) == 3
  again = pe.profile_dataset(MODEL, V, images, labels, **kw)  # a rerun reads the chunks
  assert again["computed_images"] == 0
  np.testing.assert_array_equal(again["image"], prof["image"])
  x = data_lib.normalize_for(MODEL, images)
  preds = np.asarray(jnp.argmax(wavefront_logits(MODEL, V, x), -1))
  np.testing.assert_array_equal(preds[0], np.argmax(prof["logits"], -1))
  result = pe_report.analyze(prof, preds, labels, images, grid=4, n_resamples=50, class_names=[str(i) for i in range(10)])
  result.update(method="exact", num_blocks=3)
  result = json.loads(json.dumps(result))
  assert sum(result["distribution"]["image"]["peak"]) == 24 and len(result["grid"]["longest"]) == 4
  np.testing.assert_array_equal(pe_report.image_from_json(result["grid"]["longest"][0]["pixels"]),
                                images[result["grid"]["longest"][0]["index"]])
  assert result["tape_vs_wavefront_prediction_agreement"] == 1.0 and result["max_per_image_sum_error"] < 1e-5
  # the headline's window is the most common one among the 24 per-image windows, counted here from the profiles
  ranges = [paths.effective_range(curve, result["share"]) for curve in prof[result["which_headline"]]]
  windows = Counter((w["lo"], w["hi"]) for w in ranges)
  line = pe_report.headline(result)[0]
  found = re.match(rf"24 images, exact \|\|G_k\|\| at the {result['which_headline']}: most common window "
                   r"(\d+)-(\d+) \((\d+) images\)", line)
  assert found, line
  lo, hi, count = map(int, found.groups())
  assert windows[(lo, hi)] == count == max(windows.values()), (line, windows)
  from PIL import Image
  pixels = np.asarray(Image.open(plots.save(result, str(tmp_path / "p.png"))).convert("L"))
  assert min(pixels.shape) > 200 and pixels.std() > 10  # a figure with something drawn in it
  sampled = pe.profile_dataset(MODEL, V, images[:8], labels[:8], batch_size=4, method="sampled", samples_per_length=2)
  assert sampled["image"].shape == (8, 4) and np.all(sampled["image"] > 0)
  assert math.isclose(float(sampled["loss"][0]), float(prof["loss"][0]), rel_tol=1e-5)
