"""The lesion lattice: the trie sweep equals per-mask evaluation, exact Shapley values satisfy efficiency and
equal brute force over permutations, the sampled estimator agrees with them, and the scores' exact anchors."""
import itertools
import json

import jax
import numpy as np
import pytest

from resnet_ensembles import models
from resnet_ensembles.lesion import lattice, scores, shapley, tasks
from resnet_ensembles.store import llama2c
from resnet_ensembles.study import lattice as lattice_study
from resnet_ensembles.study import lattice_tables
from resnet_ensembles.plots import lattice as lattice_plots


def _split(num=12, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (num, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, num).astype(np.int32)


def _perturbed(model, seed=0):
  """Random variables with BatchNorm statistics moved off (0, 1), so every stored statistic matters."""
  v = models.init_variables(model, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  stats = jax.tree.map(lambda a: np.asarray(a) + 0.1 * np.abs(rng.standard_normal(a.shape)).astype(a.dtype),
                       v.get("batch_stats", {}))
  return {"params": v["params"], "batch_stats": stats}


@pytest.fixture(scope="module")
def resnet():
  model = models.CifarResNet(depth=14, width=4)   # 6 blocks, openers 0, 2, 4
  return model, _perturbed(model)


@pytest.mark.parametrize("levels", [0, 2, None])
def test_lattice_equals_per_mask_evaluation(resnet, levels):
  model, v = resnet
  split = _split()
  lat = lattice.lattice_sweep(model, v, split, positions=(1, 2, 3, 5), batch_size=5, levels=levels)
  ref = lattice.mask_values(model, v, split, lat["masks"], batch_size=5, masks_per_call=4)
  np.testing.assert_allclose(lat["loss"], ref["loss"], rtol=2e-5, atol=1e-6)
  np.testing.assert_array_equal(lat["error"], ref["error"])
  assert lat["masks"].shape == (16, 6) and np.all(lat["masks"][:, [0, 4]] == 1)
  assert len(set(np.round(lat["loss"], 6))) > 8   # the lesions differ: the test could fail


def test_lattice_equals_per_mask_evaluation_vit_and_plain():
  for model in (models.VisionTransformer(depth=2, width=16, heads=2, mlp_dim=32, patch=8),
                models.PlainNet(depth=8, width=4, variant="original")):
    v = _perturbed(model, 1)
    split = _split(7, 1)
    lat = lattice.lattice_sweep(model, v, split, batch_size=4, levels=1)
    ref = lattice.mask_values(model, v, split, lat["masks"], batch_size=4)
    np.testing.assert_allclose(lat["loss"], ref["loss"], rtol=2e-5, atol=1e-6)
    np.testing.assert_array_equal(lat["error"], ref["error"])


def test_resumed_lattice_equals_uninterrupted(resnet, tmp_path):
  model, v = resnet
  split = _split(6)
  whole = lattice.lattice_sweep(model, v, split, positions=(1, 3, 5), batch_size=3, levels=1,
                                resume_dir=str(tmp_path / "p"))
  (tmp_path / "p" / "chunk_00001.npz").unlink()   # as if killed before the second sub-trie finished
  again = lattice.lattice_sweep(model, v, split, positions=(1, 3, 5), batch_size=3, levels=1,
                                resume_dir=str(tmp_path / "p"))
  np.testing.assert_array_equal(whole["loss"], again["loss"])


def test_bad_positions_fail_in_one_line():
  layout = models.CifarResNet(depth=32).layout
  with pytest.raises(ValueError, match="1..12 positions"):
    lattice.lattice_positions(layout, range(13))
  with pytest.raises(ValueError, match="distinct blocks"):
    lattice.lattice_positions(layout, [1, 1])
  assert lattice.lattice_positions(layout) == layout.deletable_blocks
  with pytest.raises(ValueError, match="2\\^k entries"):
    shapley.exact_shapley(np.zeros(6))


def test_shapley_efficiency_and_known_games():
  rng = np.random.default_rng(0)
  v = rng.standard_normal(2 ** 6)
  v[0] = 0.0
  phi = shapley.exact_shapley(v)
  assert np.isclose(phi.sum(), v[-1] - v[0])
  # an additive game with one pairwise term: Shapley splits the pair's surplus, I_01 is that surplus
  a, c = rng.standard_normal(4), 0.7
  bits = (np.arange(16)[:, None] >> np.arange(4)) & 1
  game = bits @ a + c * bits[:, 0] * bits[:, 1]
  np.testing.assert_allclose(shapley.exact_shapley(game), a + np.array([c / 2, c / 2, 0, 0]), atol=1e-12)
  inter = shapley.interactions(game)
  assert np.isclose(inter[0, 1], c) and np.allclose(inter[2:, 2:][~np.eye(2, dtype=bool)], 0)
  assert shapley.additivity(bits @ a)["first_order"] == pytest.approx(1.0)
  add = shapley.additivity(game)
  assert add["first_order"] < 1.0 and add["up_to_pairwise"] == pytest.approx(1.0)


def test_exact_shapley_equals_brute_force_on_a_tiny_network(resnet):
  model, v = resnet
  split, positions = _split(), (1, 2, 3, 5)
  lat = lattice.lattice_sweep(model, v, split, positions=positions, batch_size=6)
  phi = shapley.exact_shapley(shapley.worth(lat["loss"]))
  # the definition: each of the 4! orders adds the branches one by one to the network with all four deleted
  brute = np.zeros(4)
  for perm in itertools.permutations(range(4)):
    m = np.ones((5, 6), np.float32)
    m[:, list(positions)] = 0
    for step, j in enumerate(perm):
      m[step + 1:, positions[j]] = 1
    loss = lattice.mask_values(model, v, split, m, batch_size=6)["loss"]
    for step, j in enumerate(perm):
      brute[j] += (loss[step] - loss[step + 1]) / 24
  np.testing.assert_allclose(phi, brute, rtol=1e-5, atol=1e-6)
  assert np.isclose(phi.sum(), lat["loss"][0] - lat["loss"][-1])


def test_sampled_shapley_within_its_standard_error():
  rng = np.random.default_rng(1)
  k = 7
  bits = (np.arange(2 ** k)[:, None] >> np.arange(k)) & 1
  v = bits @ rng.standard_normal(k) + 0.5 * np.prod(bits[:, :3], 1) + 0.1 * rng.standard_normal(2 ** k)
  v -= v[0]
  exact = shapley.exact_shapley(v)
  lookup = lambda m: v[(np.asarray(m, np.int64) << np.arange(k)).sum(1)]
  mean, se = shapley.sampled_shapley(lookup, k, 400, seed=3)
  z = (mean - exact) / se
  assert np.all(np.abs(z) < 3.5), z
  assert np.all(se > 0) and np.mean(z ** 2) < 3.0
  with pytest.raises(ValueError, match="num_permutations"):
    shapley.sampled_shapley(lookup, k, 1)


def test_pruning_curves():
  rng = np.random.default_rng(2)
  loss = rng.uniform(0, 3, 2 ** 5)
  oracle, sets = shapley.oracle_curve(loss)
  greedy, order = shapley.greedy_curve(loss)
  ranked = shapley.ranked_curve(loss, [4, 3, 2, 1, 0])
  assert np.all(oracle <= greedy + 1e-12) and np.all(oracle <= ranked + 1e-12)
  assert oracle[0] == loss[-1] == greedy[0] and oracle[-1] == loss[0] and sorted(order) == list(range(5))
  assert [len(s) for s in sets] == list(range(6))
  assert list(shapley.least_important_first([0.3, 0.1, 0.2])) == [1, 2, 0]


def test_scores_anchors_on_the_lattice(resnet):
  model, v = resnet
  split = _split()
  sc = scores.branch_scores(model, v, split, batch_size=5)
  lat = lattice.lattice_sweep(model, v, split, batch_size=5)   # all 6 blocks
  # the logit lens with every later block deleted is the lattice's network keeping blocks 0..p-1
  for p in range(7):
    assert np.isclose(sc["lens_loss"][p], lat["loss"][2 ** p - 1], rtol=1e-5)
  assert np.isclose(sc["loss"], lat["loss"][-1], rtol=1e-5)
  assert set(sc["scores"]) == set(scores.SCORES) and all(len(s) == 6 for s in sc["scores"].values())
  assert np.all(np.abs(sc["scores"]["refinement"]) <= 1) and np.all(sc["scores"]["norm_ratio"] > 0)
  assert np.all((sc["scores"]["angular"] >= 0) & (sc["scores"]["angular"] <= 1))
  c = scores.spearman_ci(np.arange(8.0), np.arange(8.0) ** 2)
  assert c["rho"] == pytest.approx(1.0) and c["lo"] <= c["rho"] <= c["hi"]


def test_study_network_writes_tables(resnet, tmp_path):
  model, v = resnet
  split = _split(8)
  r = lattice_study.study_network("tiny", "nowhere", split, str(tmp_path), positions=[1, 3, 5], batch_size=4,
                                  loaded=(model, v, None))
  s = lattice_study.study_network("tiny_sampled", "nowhere", split, str(tmp_path), mode="sampled",
                                  num_permutations=3, loaded=(model, v, None))
  assert json.loads((tmp_path / "tiny.json").read_text())["positions"] == [1, 3, 5]
  assert np.isclose(sum(r["loss"]["shapley"]), r["loss"]["none_kept"] - r["loss"]["full"])
  assert np.isclose(sum(s["loss"]["shapley"]), s["loss"]["none_kept"] - s["loss"]["full"])
  text = lattice_tables.write_tables([dict(r, label="tiny"), dict(s, label="tiny sampled")], str(tmp_path))
  assert "| tiny |" in text and "(sampled)" in text
  lattice_plots.draw_all([dict(r, label="tiny"), dict(s, label="tiny sampled")], str(tmp_path))
  assert all((tmp_path / f).stat().st_size > 0 for f in ("shapley_vs_cost.png", "additivity.png", "pruning.png"))


def test_block_evaluations_and_bad_config():
  assert lattice.block_evaluations(3, (0, 1, 2)) == (7, 24)      # 2^k - 1 against 2^k x n
  assert lattice.block_evaluations(3, (1, 2)) == (1 + 1 + 2, 12)
  from experiments.configs import lattice as lattice_config
  from resnet_ensembles.study import lattice_run
  c = lattice_config.get_config("tiny")
  with pytest.raises(ValueError, match="no networks configured"):
    lattice_run.check(c, [])
  c.networks = {"a": "results/repro/train/resnet"}
  with pytest.raises(ValueError, match="--only names networks the config lacks"):
    lattice_run.check(c, ["b"])
  c.modes = {"a": "exact"}
  with pytest.raises(ValueError, match="modes.a must be"):
    lattice_run.check(c, [])
  c.networks = {"a": "no/such/folder"}
  with pytest.raises(FileNotFoundError):
    lattice_run.check(c, [])
  c.networks = {"lm": "../shared/data/pretrained/llama2c-stories260K/stories260K.bin"}
  c.texts = {"lm": {"tokenizer": "no/such/tok.bin", "text": "no/such/text.txt"}}
  with pytest.raises(FileNotFoundError, match="lm's (checkpoint|tokenizer)"):
    lattice_run.check(c, [])
  with pytest.raises(ValueError, match="cpu or tiny"):
    lattice_config.get_config("gpu")


@pytest.fixture(scope="module")
def tiny_llama():
  """A random 3-layer Llama (6 sublayers) and 5 token windows of 12 tokens."""
  h = llama2c.Header(dim=16, hidden_dim=24, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=32, seq_len=12,
                     shared_classifier=True)
  rng = np.random.default_rng(3)
  arrays = {k: rng.normal(size=s).astype(np.float32) * (1.0 if "norm" in k else 0.4) for k, s in h.shapes().items()}
  arrays["classifier"] = arrays["embedding"]
  stream = rng.integers(0, 32, 5 * 12 + 1).astype(np.int32)
  x, y = stream[:-1].reshape(5, 12), stream[1:].reshape(5, 12)
  return llama2c.model_of(h), llama2c.to_variables(h, arrays), tasks.TokenTask(x, y, batch_size=2)


@pytest.mark.parametrize("levels", [0, 3])
def test_token_lattice_equals_per_mask_evaluation_through_the_token_task(tiny_llama, levels):
  model, v, task = tiny_llama
  lat = lattice.task_lattice_sweep(model, v, task, levels=levels)   # all 6 sublayers: 64 networks
  ref = tasks.evaluate(model, v, task, lat["masks"], networks_per_chunk=16)
  for m in ("loss", "kl", "agreement", "accuracy"):
    np.testing.assert_allclose(lat[m], ref[m], rtol=2e-5, atol=1e-6)
  assert lat["masks"].shape == (64, 6) and lat["agreement"][-1] == 1.0 and abs(lat["kl"][-1]) < 1e-5
  assert len(set(np.round(lat["loss"], 5))) > 32   # the lesions differ: the test could fail
  with pytest.raises(ValueError, match="token ids must lie"):
    lattice.task_lattice_sweep(model, v, tasks.TokenTask(task.tokens + 40, task.targets))


def test_token_scores_anchor_on_the_token_lattice(tiny_llama):
  model, v, task = tiny_llama
  sc = scores.branch_scores(model, v, (task.tokens, task.targets), batch_size=2)
  lat = lattice.task_lattice_sweep(model, v, task)
  for p in range(7):   # the logit lens after p sublayers is the network keeping sublayers 0..p-1
    assert np.isclose(sc["lens_loss"][p], lat["loss"][2 ** p - 1], rtol=1e-5)
  assert np.isclose(sc["loss"], lat["loss"][-1], rtol=1e-5)
  assert np.all((sc["scores"]["angular"] > 0) & (sc["scores"]["angular"] <= 1))


def test_study_network_of_a_language_model(tiny_llama, tmp_path):
  model, v, task = tiny_llama
  r = lattice_study.study_network("lm", "nowhere", None, str(tmp_path), loaded=(model, v, None), task=task)
  assert r["tokens"] == 60 and r["error_metric"] == "disagreement" and r["loss"]["additivity"]
  np.testing.assert_allclose(r["error"]["single_cost"][0],
                             r["lattice"]["agreement"][-1] - r["lattice"]["agreement"][-2], atol=1e-12)
  assert np.isclose(sum(r["loss"]["shapley"]), r["loss"]["none_kept"] - r["loss"]["full"])
  text = lattice_tables.write_tables([dict(r, label="lm")], str(tmp_path))
  assert "| lm | 6 of 6 | disagreement |" in text and "5 windows of 12 tokens" in text
  with pytest.raises(ValueError, match="'lattice' with a token task"):
    lattice_study.study_network("lm2", "nowhere", None, str(tmp_path), mode="sampled", loaded=(model, v, None),
                                task=task)
