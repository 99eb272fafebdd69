"""The ViT study end to end on a tiny 3-layer ViT beside a tiny ResNet: every sweep written and kept, the
comparison table, figure and Sun et al. verdicts; the verdict rules on numbers made to pass and to fail."""
import json
import os

import jax
import pytest

from experiments.configs import cifar10, vit as vit_configs, vit_study as study_config
from resnet_ensembles import models
from resnet_ensembles.data import cifar10 as data
from resnet_ensembles.plots import vit_comparison as comparison_plot
from resnet_ensembles.store import checkpoints
from resnet_ensembles.study import depth_series, vit_comparison


def _exported(tmp_path, config, name: str) -> str:
  model = models.from_config(config)
  variables = models.init_variables(model, jax.random.PRNGKey(0))
  return checkpoints.export_variables(variables, config, str(tmp_path / name))


def test_vit_study_runs_keeps_and_compares(cifar, tmp_path):
  vit_config = vit_configs.get_config("tiny")
  vit_config.model.depth = 3
  small = {"train": data.subset(cifar["train"], 256), "test": data.subset(cifar["test"], 200, 1)}
  # the ResNet beside it: a depth-series single-deletion sweep of a tiny ResNet (its other sweeps: test_depth_series)
  rc = study_config.get_config("tiny")
  rc.networks, rc.sweeps, rc.with_paths = {"resnet": _exported(tmp_path, cifar10.get_config("resnet20"), "resnet")}, \
      ("single",), False
  assert depth_series.run(rc, str(tmp_path / "series"), data=small) == ["resnet/single_stored"]
  c = study_config.get_config("tiny")
  c.networks = {"vit": _exported(tmp_path, vit_config, "vit")}
  workdir = str(tmp_path / "study")
  ran = depth_series.run(c, workdir, data=small)
  assert ran == [f"vit/{s}_stored" for s in c.sweeps] + ["vit/paths"]
  assert depth_series.run(c, workdir, data=small) == []           # everything kept
  painters = json.load(open(os.path.join(workdir, "vit", "painters_stored.json")))["networks"][0]
  assert painters["num_layers"] == 3 and {r["variant"] for r in painters["rows"]} == {"parallel", "skip"}
  summary = vit_comparison.summarize(os.path.join(workdir, "vit"), str(tmp_path / "series" / "resnet"))
  assert summary["vit"]["n"] == 6 and summary["resnet"]["n"] == 9
  assert len(summary["painters"]["layer_cost"]) == 3
  assert summary["painters"]["variants"]["skip"].keys() == {"1"}
  assert [f["finding"].split(";")[0] for f in summary["findings"]][:1] == ["the first and the last layers matter most"]
  assert "k" in summary["vit"] and "k" not in summary["resnet"]  # the ResNet has no k sweep here
  table = vit_comparison.render(summary, {"vit": "tiny ViT", "resnet": "tiny ResNet"})
  assert "| residual branches n | 6 | 9 |" in table and "Painters" in table
  assert "| effective window (share of paths) | " in table and table.count("n/a") >= 4
  # the table's numbers, recomputed from the sweeps' raw rows: full error, and the typical deletions' mean and
  # worst cost (openers left out) of each network
  cells = []
  for folder in (os.path.join(workdir, "vit"), str(tmp_path / "series" / "resnet")):
    net = json.load(open(os.path.join(folder, "single_stored.json")))["networks"][0]
    costs = [r["error"] - net["full_error"] for r in net["rows"] if r["deleted"] not in net["stage_openers"]]
    cells.append((f"{100 * net['full_error']:.2f} ± ", f"{100 * sum(costs) / len(costs):+.2f} ± ",
                   f"({100 * max(costs):+.2f})"))
  full = next(l for l in table.splitlines() if l.startswith("| full test error % | "))
  single = next(l for l in table.splitlines() if l.startswith("| single deletion: mean (worst) cost, pts | "))
  for (f, mean, worst), (full_cell, single_cell) in zip(cells, zip(full.split(" | ")[1:], single.split(" | ")[1:])):
    assert full_cell.startswith(f) and single_cell.startswith(mean) and worst in single_cell, (full, single)
  layers = json.load(open(os.path.join(workdir, "vit", "layers_stored.json")))["networks"][0]
  by_unit = sorted(layers["rows"], key=lambda r: r["deleted_unit"])
  assert ("ViT whole-layer deletions (cost, pts): " + ", ".join(
      f"layer {i}: {100 * (r['error'] - layers['full_error']):+.2f}" for i, r in enumerate(by_unit))) in table
  assert os.path.exists(comparison_plot.save(summary, {}, str(tmp_path / "comparison.png")))


def test_columns_are_named_by_the_depth_series_labels():
  names = study_config.get_config("cpu").labels.to_dict()
  assert vit_comparison.labels(names, "vit", "results/depth_series/own_resnet32/") == {
      "vit": "ViT (6 layers, 12 branches)", "resnet": "ResNet-32 (own, pre-act)"}
  assert vit_comparison.labels(names, "vit2", "/x/resnet20") == {"vit": "vit2",
                                                                 "resnet": "ResNet-20 (imported, fine-tuned)"}
  assert vit_comparison.labels({}, "vit", "/elsewhere/net")["resnet"] == "ResNet"


@pytest.mark.parametrize("layer_cost, verdict", [([0.3, 0.05, 0.1, 0.4], "yes"), ([0.3, 0.05, 0.35, 0.4], "partly"),
                                                 ([0.01, 0.05, 0.5, 0.02], "no")])
def test_first_and_last_layer_rule(layer_cost, verdict):
  (f,) = vit_comparison.findings({"layer_cost": layer_cost})
  assert f["verdict"] == verdict


def test_graceful_rules_compare_each_variant_with_skipping():
  entry = lambda costs: {str(n): {"cost": c, "se": None, "count": 1} for n, c in costs.items()}
  p = {"layer_cost": [0.3, 0.05, 0.06, 0.4],
       "variants": {"skip": entry({1: 0.05, 2: 0.2}), "shuffle": entry({2: 0.1}), "reverse": entry({2: 0.3}),
                    "parallel": entry({1: 0.0, 2: 0.25})}}
  verdicts = {f["finding"]: f["verdict"] for f in vit_comparison.findings(p)}
  assert verdicts == {"the first and the last layers matter most; middle layers can be dropped": "yes",
                      "skipping more middle layers degrades gracefully": "yes",
                      "middle layers may run in another (random) order, degrading gracefully": "yes",
                      "middle layers may run in reverse order, degrading gracefully": "no",
                      "middle layers may run in parallel, degrading gracefully": "partly"}
  p["variants"]["skip"] = entry({1: 0.35, 2: 0.2})  # not monotone, and one middle layer costs more than the first
  assert vit_comparison.findings(p)[1]["verdict"] == "no"


def test_painters_sweep_needs_the_stored_network(tmp_path):
  c = study_config.get_config("tiny")
  c.networks = {"vit": _exported(tmp_path, vit_configs.get_config("tiny"), "vit")}
  c.bns = ("stored", "recalibrate")
  with pytest.raises(ValueError, match="painters sweep runs with the network as trained"):
    depth_series.check_config(c)
