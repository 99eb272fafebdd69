"""The paper chain's first step, the precision measurement (training.speed via chain.steps.step_speed), on a
depth-8 network in this process; the chain's rehearsal (test_reproduce.py) runs with it switched off."""
import copy
import json
import os

import numpy as np

from experiments.configs import reproduce as reproduce_config
from resnet_ensembles.models import layout
from resnet_ensembles.study import stages
from resnet_ensembles.study.chain import files as chain_files
from resnet_ensembles.study.chain import runner
from resnet_ensembles.study.chain import steps as chain_steps
from resnet_ensembles.training import speed


def _split(n: int = 64):
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8), rng.integers(0, 10, n).astype(np.int32)


def _config():
  """The tiny study's config with a depth-8 ResNet: the network the speed step measures."""
  config = reproduce_config.get_config("tiny")
  config.train.runs.resnet = "resnet8,cpu"
  return config


def test_speed_step_times_each_precision_checks_bf16_and_sets_the_chains_precision(tmp_path):
  config = _config()
  config.chain.speed_warmup, config.chain.speed_steps, config.chain.check_steps = 0, 1, 2
  workdir = str(tmp_path)
  split = _split()
  assert chain_steps.step_speed(config, workdir, lambda cfg: {"train": split}) == {"choice": "default"}
  measured = chain_files.read_json(os.path.join(workdir, chain_files.SPEED_FILE))
  assert set(measured["results"]) == {"fp32", "tf32", "bf16"}
  assert all(r["images_per_s"] > 0 and r["timed_steps"] == 1 for r in measured["results"].values())
  assert measured["train_flops_per_image"] == 6 * layout.forward_macs(8) and measured["model"] == "resnet8"
  check = measured["bf16_check"]
  assert check["steps"] == 2 and check["against"] in ("fp32", "tf32") and np.isfinite(check["loss_last_quarter"]["bf16"])
  assert measured["choice"]["name"] == "default" and measured["git_commit"]  # off a GPU: JAX's default
  assert not os.path.exists(os.path.join(workdir, "chain", "speed_partial.json"))  # the finished one replaces it
  c = runner.with_precision(config, workdir)
  assert (c.train.dtype, c.train.matmul_precision) == ("", "")
  measured["choice"] = {"name": "bf16", "dtype": "bfloat16", "matmul_precision": ""}
  chain_files.write_json(measured, os.path.join(workdir, chain_files.SPEED_FILE))
  assert runner.with_precision(config, workdir).train.dtype == "bfloat16"  # what later steps train in


def test_a_cut_measurement_keeps_what_it_measured_on_the_same_device_and_network():
  cfg = stages.train_config(_config(), "resnet")
  partial = {"device": speed.measure(cfg, _split(), timed=0, check_steps=0, precisions=())["device"],
             "model": "resnet8", "results": {"fp32": {"images_per_s": 12345.0}, "tf32": {"images_per_s": 23456.0}}}
  saved = []
  out = speed.measure(cfg, _split(), warmup=0, timed=1, check_steps=0, precisions=("fp32", "tf32"),
                      partial=partial, save=saved.append)
  assert out["results"] == partial["results"] and not saved  # nothing measured again
  other = dict(copy.deepcopy(partial), model="resnet20")     # another network's numbers are not this one's
  out = speed.measure(cfg, _split(), warmup=0, timed=1, check_steps=0, precisions=("fp32",), partial=other,
                      save=lambda o: saved.append(json.loads(json.dumps(o))))
  assert out["results"]["fp32"]["images_per_s"] != 12345.0 and set(out["results"]) == {"fp32"}
  assert len(saved) == 1 and saved[0]["results"] == out["results"]  # saved after each precision


def test_the_precision_rule_on_a_gpu():
  gpu = lambda fp32, tf32, bf16, passed: {"platform": "gpu", "bf16_check": {"passed": passed}, "results": {
      "fp32": {"images_per_s": fp32}, "tf32": {"images_per_s": tf32}, "bf16": {"images_per_s": bf16}}}
  assert speed.choose(gpu(100, 111, 138, True))["name"] == "tf32"     # bf16 under 1.25x tf32
  assert speed.choose(gpu(100, 111, 139, True))["name"] == "bf16"
  assert speed.choose(gpu(100, 111, 1000, False))["name"] == "tf32"   # fast but its loss check failed
  assert speed.choose(gpu(100, 109, 120, True))["name"] == "fp32"     # tf32 under 1.10x fp32: fp32
  choice = speed.choose(gpu(100, 109, 125, True))
  assert {k: v for k, v in choice.items() if k != "why"} == {"name": "bf16", "dtype": "bfloat16", "matmul_precision": ""}
  assert speed.choose(gpu(100, 100, 100, True))["matmul_precision"] == "highest"  # fp32 means full fp32
