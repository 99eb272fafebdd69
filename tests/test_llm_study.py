"""The engines on tokens: a TokenTask's scores against a direct computation, every sweep's rows, the logit lens,
the path decomposition, bad input, and the study's main on a small random llama2.c checkpoint."""
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_llama import STORIES, tiny, write_checkpoint  # noqa: E402

from resnet_ensembles.lesion import tasks, token_study  # noqa: E402
from resnet_ensembles.paths import tokens as token_paths  # noqa: E402
from resnet_ensembles.store import llama2c  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def net():
  header, arrays = tiny()
  header = llama2c.Header(**{**header.__dict__, "n_layers": 3})
  rng = np.random.default_rng(5)
  arrays = {k: rng.normal(size=s).astype(np.float32) * (1.0 if "norm" in k else 0.3) for k, s in header.shapes().items()}
  model, variables = llama2c.model_of(header), llama2c.to_variables(header, arrays)
  x = rng.integers(0, header.vocab_size, size=(5, 12))
  y = rng.integers(0, header.vocab_size, size=(5, 12))
  return model, variables, tasks.TokenTask(x, y, batch_size=2)


def test_token_scores_equal_a_direct_computation(net):
  model, variables, task = net
  masks = np.ones((3, 6), np.float32)
  masks[1, 2], masks[2, [0, 5]] = 0, 0
  got = tasks.evaluate(model, variables, task, masks, networks_per_chunk=2)  # padded stack and batches
  ref = jax.jit(lambda v: jax.nn.log_softmax(model.apply(v, jnp.asarray(task.tokens))))(variables)
  direct = jax.jit(lambda m: jax.nn.log_softmax(model.apply(variables, jnp.asarray(task.tokens), block_mask=m)))
  for i, m in enumerate(masks):
    logp = direct(m)
    loss = -np.take_along_axis(np.asarray(logp), task.targets[..., None], -1).mean()
    kl = np.mean(np.sum(np.exp(ref) * (ref - logp), -1))
    agree = np.mean(np.argmax(logp, -1) == np.argmax(ref, -1))
    np.testing.assert_allclose([got["loss"][i], got["kl"][i], got["agreement"][i]], [loss, kl, agree], rtol=1e-5,
                               atol=1e-6)
  assert got["kl"][0] < 1e-6 and got["agreement"][0] == 1 and got["tokens"] == task.targets.size


def test_sweeps_cover_every_subset_order_and_variant(net):
  model, variables, task = net
  single = token_study.single(model, variables, task)
  subsets = token_study.subsets(model, variables, task, networks_per_chunk=16)
  orders = token_study.orderings(model, variables, task)
  assert len(single) == 1 + 6 + 3 and len(subsets) == 64 and len(orders) == math.factorial(3)
  assert sorted(len(r["deleted"]) for r in subsets) == sorted(bin(i).count("1") for i in range(64))
  layer1 = next(r for r in single if r["kind"] == "layer" and r["layer"] == 1)
  both = next(r for r in subsets if r["deleted"] == [2, 3])
  assert layer1["loss"] == pytest.approx(both["loss"], rel=1e-6)
  assert sum(r["adjacent_swap"] for r in orders) == 2
  ident = next(r for r in orders if r["layer_order"] == [0, 1, 2])
  assert ident["kl"] < 1e-6 and ident["loss"] == pytest.approx(single[0]["loss"], rel=1e-6)
  painted = token_study.painters_variants(model, variables, task)
  assert {r["variant"] for r in painted} == {"parallel", "skip", "full"}
  # one loop of a parallel span is the parallel variant; more loops are another network
  looped = token_study.looped_parallel(model, variables, task, spans=((0, 2),), loops=(1, 2))
  parallel = next(r for r in painted if r["variant"] == "parallel" and (r["start"], r["length"]) == (0, 2))
  assert looped[0]["loss"] == pytest.approx(parallel["loss"], rel=1e-5) and looped[1]["loss"] != looped[0]["loss"]


def test_logit_lens_ends_at_the_model_and_geometry_is_angular(net):
  model, variables, task = net
  lens = token_study.logit_lens(model, variables, task)
  assert len(lens) == 7 and lens[-1]["kl"] < 1e-5 and lens[-1]["agreement"] == 1.0 and lens[0]["kl"] > 0
  geo = token_study.stream_geometry(model, variables, task)
  ang = np.asarray(geo["angular_distance"])
  assert ang.shape == (4, 4) and np.allclose(np.diag(ang), 0, atol=2e-3) and np.allclose(ang, ang.T, atol=1e-5)
  assert all(0 <= b <= 2 for b in geo["block_influence"])


def test_path_decomposition_on_tokens_sums_to_the_gradient(net):
  model, variables, task = net
  res = token_paths.analyze(model, variables, task.tokens[:2], task.targets[:2], max_routes=100)
  assert res["routes_per_length"] == [math.comb(6, k) for k in range(7)] and res["sum_error"] < 1e-4
  # the exact G_0 is the one path through no branch, G_n the one through all of them
  assert res["exact_g_k"][0] == pytest.approx(res["one_path_mean"][0], rel=1e-5)
  assert res["exact_g_k"][-1] == pytest.approx(res["one_path_mean"][-1], rel=1e-5)
  assert res["effective_range"]["lo"] <= res["effective_range"]["hi"]


def test_bad_token_input_fails_with_one_line(net):
  model, variables, task = net
  bad = tasks.TokenTask(task.tokens + 40, task.targets)
  with pytest.raises(ValueError, match="vocabulary"):
    tasks.evaluate(model, variables, bad, np.ones((1, 6)))
  with pytest.raises(ValueError, match="one shape"):
    tasks.TokenTask(task.tokens[:, :3], task.targets)
  with pytest.raises(ValueError, match=r"\[configurations, 6\]"):
    tasks.evaluate(model, variables, task, np.ones((1, 5)))


def test_the_main_runs_resumes_and_summarises(tmp_path):
  if not os.path.isfile(os.path.join(STORIES, "tok512.bin")):
    pytest.skip(f"stories260K not found at {STORIES} (set LLAMA2C_DIR)")
  header, arrays = tiny()
  header = llama2c.Header(**{**header.__dict__, "n_layers": 3, "vocab_size": 512, "seq_len": 64})
  rng = np.random.default_rng(0)
  arrays = {k: rng.normal(size=s).astype(np.float32) * 0.3 for k, s in header.shapes().items()}
  ckpt = str(tmp_path / "random.bin")
  write_checkpoint(ckpt, header, arrays)
  work = str(tmp_path / "study")
  cmd = [sys.executable, "-m", "experiments.llm_study", "--config=experiments/configs/llm_study.py:tiny",
         f"--config.checkpoint={ckpt}", f"--config.tokenizer={STORIES}/tok512.bin",
         f"--config.text={STORIES}/tinystories/valid_first1000.txt", "--config.max_routes=2", f"--workdir={work}"]
  first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert first.returncode == 0, first.stderr[-2000:]
  checks = json.load(open(os.path.join(work, "checks.json")))
  assert "published_loss" not in checks and checks["windows"] == 4 and checks["loss"] > 3  # a random network
  summary = open(os.path.join(work, "summary.md")).read()
  assert "language model" in summary and os.path.isfile(os.path.join(work, "summary.png"))
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert again.returncode == 0 and again.stderr.count(" kept (") == 9
  bad = subprocess.run(cmd[:-1] + [f"--workdir={tmp_path / 'b'}", "--config.window=65"], cwd=ROOT,
                       capture_output=True, text=True)
  assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("error:") and "context" in bad.stderr
