"""experiments/reproduce.py end to end on the `tiny` config: stages, skipping, partial reruns, the report."""
import json
import os

from experiments import reproduce
from experiments.configs import reproduce as reproduce_config


def test_reproduce_tiny_end_to_end(tmp_path, cifar_root, cifar):
  config = reproduce_config.get_config("tiny")
  config.train.folder = cifar_root
  workdir = str(tmp_path / "repro")

  ran = reproduce.run(config, workdir, data=cifar)
  assert ran == list(reproduce.STAGES)
  for stage in reproduce.STAGES:
    assert os.path.exists(os.path.join(workdir, f"{stage}.done.json"))
    assert all(os.path.exists(p) for p in reproduce.stage_outputs(config, workdir, stage))

  report = open(os.path.join(workdir, "report.md")).read()
  with open(os.path.join(workdir, "lesion", "resnet", "single_stored.json")) as f:
    single = json.load(f)
  assert f"{100 * single['networks'][0]['full_error']:.2f}%" in report
  with open(os.path.join(workdir, "paths", "paths.json")) as f:
    r = json.load(f)["effective_range"]["image"]
  assert f"{r['lo']}-{r['hi']} of {single['networks'][0]['num_blocks']}" in report
  assert "holds?" in report and "![" in report and "variants/variants.png" in report

  assert reproduce.run(config, workdir, data=cifar) == []   # everything done: nothing reruns

  os.remove(os.path.join(workdir, "paths", "paths.json"))   # one stage's output lost
  assert reproduce.run(config, workdir, data=cifar) == ["paths", "figures", "report"]

  config.report.version = 2                                  # a changed config section reruns its stage
  assert reproduce.run(config, workdir, data=cifar) == ["report"]
