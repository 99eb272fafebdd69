"""The depth series end to end on a tiny network: sweeps and paths written, kept on a rerun, summarised."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import cifar10, depth_series as depth_config
from resnet_ensembles import models
from resnet_ensembles.data import cifar10 as data
from resnet_ensembles.plots import depth_series as series_plot
from resnet_ensembles.store import checkpoints
from resnet_ensembles.lesion.summary import reorderings
from resnet_ensembles.study import depth_series, report, series, series_table, trends


def _exported(tmp_path, seed: int) -> str:
  config = cifar10.get_config("resnet20")
  model = models.from_config(config)
  variables = models.init_variables(model, jax.random.PRNGKey(seed))
  return checkpoints.export_variables(variables, config, str(tmp_path / f"net{seed}"))


def test_depth_series_runs_keeps_and_summarises(cifar, tmp_path):
  c = depth_config.get_config("tiny")
  c.networks.net0 = _exported(tmp_path, 0)
  c.bns = ("stored",)
  small = {"train": data.subset(cifar["train"], 256), "test": data.subset(cifar["test"], 200, 1)}
  workdir = str(tmp_path / "series")
  ran = depth_series.run(c, workdir, data=small)
  assert ran == ["net0/single_stored", "net0/multi_stored", "net0/reorder_stored", "net0/paths"]
  single = json.load(open(os.path.join(workdir, "net0", "single_stored.json")))
  assert single["test_images"] == 100 and len(single["networks"][0]["rows"]) == 9
  assert depth_series.run(c, workdir, data=small) == []            # everything kept
  # A new machine: a fresh workdir seeded from the finished one (as from results/) redoes nothing; kept chunks
  # travel too, unless their sweep's JSON is there; nothing the target holds is overwritten.
  os.makedirs(os.path.join(workdir, "net0", "multi_stored.json.partial", "net0"))
  fresh = str(tmp_path / "fresh")
  os.makedirs(os.path.join(fresh, "net0", "reorder_stored.json.partial"))
  with open(os.path.join(fresh, "net0", "single_stored.json"), "w") as f:
    f.write("{}")
  copied = depth_series.seed_workdir(workdir, fresh, ["net0", "absent"])
  assert copied == ["net0/multi_stored.json", "net0/paths.json", "net0/reorder_stored.json"]
  assert open(os.path.join(fresh, "net0", "single_stored.json")).read() == "{}"
  assert depth_series.run(c, fresh, data=small) == ["net0/single_stored"]
  with pytest.raises(FileNotFoundError, match="not a folder"):
    depth_series.seed_workdir(str(tmp_path / "nowhere"), fresh, ["net0"])
  c.multi.num_samples = 3                                           # a changed setting reruns that sweep only
  assert depth_series.run(c, workdir, data=small) == ["net0/multi_stored"]
  summary = series.summarize(workdir, ["net0"], [], ["stored"])
  s = summary["networks"]["net0"]["stored"]
  assert s["n"] == 9 and s["deletable"] == 6 and set(s["k"]) == {"0.1", "0.2", "0.4"}
  typical = [r["error"] - s["full"] for r in single["networks"][0]["rows"] if not r["opener"]]
  assert np.isclose(s["typical_mean_cost"], np.mean(typical))
  assert s["verdicts"]["single_typical"].startswith("n/a")          # an untrained network: no lesion verdicts
  table = series_table.render(summary, {"net0": "tiny"})
  assert "| tiny | 9 |" in table
  assert "no trend yet" in table                                   # no networks to fit: said, not an empty table
  paper_row = [l for l in table.splitlines() if "paper: pre-act ResNet-110** (Veit" in l]  # the paper's own numbers
  assert paper_row and "| 54 | 6.03 | +0.57 (+1.17) | +5.97 | 10.60 (k=5) / 20.50 (k=10) / 59.00 (k=20) | +1.97 | 5-17 of 54 (0.45%) |" in paper_row[0]
  glance = series_table.glance(summary, {"net0": "tiny"}).splitlines()   # series.md's (and the README's) first table
  assert table.startswith("### At a glance\n\n" + "\n".join(glance))
  assert glance[2].startswith(f"| tiny | 9 | stored | {100 * s['full']:.2f} | {100 * s['typical_mean_cost']:+.2f} ± ")
  assert glance[3].startswith("| **paper: pre-act ResNet-110** (canonical CIFAR-10) | 54 | stored | 6.03 | +0.57 (+1.17) |")
  assert glance[4].startswith("| *trend fits at n = 54* | 54 | stored | | n/a (n/a) | n/a |")  # no fit: n/a, not 0
  # A network swept elsewhere joins the table once its folder holds a single-deletion sweep (not before)
  c.joined = {"far": str(tmp_path / "elsewhere"), "absent": str(tmp_path / "nowhere")}
  assert list(depth_series.table_folders(c, workdir)) == ["net0"]
  shutil.copytree(os.path.join(workdir, "net0"), str(tmp_path / "elsewhere"))
  folders = depth_series.table_folders(c, workdir)
  assert folders == {"net0": os.path.join(workdir, "net0"), "far": str(tmp_path / "elsewhere")}
  joined = series.summarize(workdir, list(folders), [], ["stored"], folders)
  assert joined["networks"]["far"]["stored"]["typical_mean_cost"] == s["typical_mean_cost"]
  assert "| far twin | 9 |" in series_table.render(joined, {"net0": "tiny", "far": "far twin"})
  from PIL import Image
  pixels = np.asarray(Image.open(series_plot.save(joined, {}, os.path.join(workdir, "series.png"))).convert("L"))
  assert min(pixels.shape) > 200 and pixels.std() > 10  # a figure with something drawn in it


def test_readme_holds_the_committed_depth_series_table():
  """The README's depth-series table is the glance table of the sweeps committed in results/depth_series."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  c = depth_config.get_config("cpu")
  c.joined = {name: os.path.join(root, folder) for name, folder in c.joined.items()}
  folders = depth_series.table_folders(c, os.path.join(root, "results", "depth_series"))  # as the main draws it
  summary = series.summarize("", list(folders), list(c.fit_networks), list(c.bns), folders)
  table = series_table.glance(summary, c.labels.to_dict())
  short = series_table.glance(summary, c.labels.to_dict(), series_table.README_BNS)
  with open(os.path.join(root, "README.md")) as f:
    readme = f.read()
  with open(os.path.join(root, "results", "depth_series", "series.md")) as f:
    committed = f.read()
  assert table in committed, "results/depth_series/series.md is stale: rerun experiments.depth_series --summary_only"
  assert short in readme, "README.md's depth-series table differs from the glance table of results/depth_series"
  assert set(short.splitlines()) < set(table.splitlines())  # a subset of series.md's rows, none of its own
  assert not [l for l in short.splitlines() if "all re-estimated" in l]
  # One row recomputed from the raw sweep rows, not by the code that drew the table: the own ResNet-32 with
  # stored statistics, its full error and the mean and worst cost of deleting one typical (non-opener) block.
  with open(os.path.join(root, "results", "depth_series", "own_resnet32", "single_stored.json")) as f:
    net = json.load(f)["networks"][0]
  costs = [r["error"] - net["full_error"] for r in net["rows"] if not r["opener"]]
  row = (f"| {c.labels.own_resnet32} | {net['num_blocks']} | stored | {100 * net['full_error']:.2f} | "
         f"{100 * np.mean(costs):+.2f} ± ")
  line = next((l for l in short.splitlines() if l.startswith(row)), None)
  assert line is not None and f"({100 * max(costs):+.2f})" in line, (row, table)


def test_fit_power_law_and_line():
  f = trends.fit([9, 15, 21, 27], [0.2 * n ** -0.5 for n in (9, 15, 21, 27)], "power")
  assert np.isclose(f["slope"], -0.5) and np.isclose(f["at_54"], 0.2 * 54 ** -0.5) and f["r2"] > 0.999
  g = trends.fit([9, 15, 21, 27], [0.1 + 0.01 * n for n in (9, 15, 21, 27)], "linear")
  assert np.isclose(g["at_54"], 0.64)
  assert trends.fit([9, 15], [0.1, 0.2], "linear") is None          # fewer than 3 points: no trend
  shares = [1 / (1 + np.exp(-(-3 + 1.2 * np.log(n)))) for n in (9, 15, 21)]  # logit r = -3 + 1.2 log n
  h = trends.fit([9, 15, 21, 27], shares + [1.0], "logit")           # a share of 1 cannot be fitted: left out
  assert h["points"] == 3 and np.isclose(h["slope"], 1.2) and np.isclose(h["intercept"], -3)
  assert np.isclose(h["at_54"], 1 / (1 + np.exp(3 - 1.2 * np.log(54)))) and 0 < h["at_54"] < 1
  assert np.allclose(h["curve"]["y"], trends.predict(h, h["curve"]["n"])) and h["curve"]["n"][-1] == 54
  assert np.isclose(trends.predict(f, 54), f["at_54"]) and np.isclose(trends.predict(g, 54), 0.64)
  with pytest.raises(ValueError, match="fit form must be one of"):
    trends.fit([9, 15, 21], [0.1, 0.2, 0.3], "exponential")


def test_identity_draws_are_not_reorderings(tmp_path):
  """k random swaps can undo each other; such an order is the full network and stays out of the medians."""
  rows = [{"kendall_tau": 1.0, "error": 0.10}, {"kendall_tau": 1.0, "error": 0.10},
          {"kendall_tau": 0.96, "error": 0.14}, {"kendall_tau": 0.92, "error": 0.30}]
  net = {"full_error": 0.10, "rows": rows}
  assert reorderings(net) == rows[2:]
  assert report.tau_medians(net)["tau>=0.95"] == (0.14, 1)          # not the median of 0.10, 0.10, 0.14
  folder = tmp_path / "net"
  folder.mkdir()
  (folder / "reorder_stored.json").write_text(json.dumps({"networks": [net], "test_images": 100}))
  r = series.summarize(str(tmp_path), ["net"], [], ["stored"])["networks"]["net"]["stored"]["reorder"]
  assert r["identity_draws"] == 2 and r["tau>=0.95_count"] == 1 and np.isclose(r["tau>=0.95_cost"], 0.04)


def test_a_missing_start_from_is_one_line_before_the_workdir_exists(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  workdir = tmp_path / "series"
  out = subprocess.run([sys.executable, "-m", "experiments.depth_series", f"--workdir={workdir}",
                        f"--start_from={tmp_path / 'nowhere'}"], cwd=root, capture_output=True, text=True)
  assert out.returncode != 0 and not workdir.exists()
  assert out.stderr.strip().splitlines()[-1].endswith(
      f"FileNotFoundError: depth series: --start_from {tmp_path / 'nowhere'} is not a folder")


def test_a_k_subset_is_drawn_alone_and_recorded_in_the_settings(tmp_path):
  """multi.ks draws only those counts (10 per k as ever); the settings, which decide whether a committed sweep is
  kept, name it only when given, so every sweep made without it is still kept."""
  from resnet_ensembles.lesion import study as lesion_study
  lay = models.from_config(cifar10.get_config("resnet32")).layout  # 12 deletable blocks
  m, _, rows = lesion_study.lesion_stack(lay, "multi", num_samples=3, max_k=64, ks=(1, 5, 12))
  assert [r["k"] for r in rows[:-1]] == [1] * 3 + [5] * 3 + [12] * 3 and rows[-1]["full"]
  np.testing.assert_array_equal((m[:-1] == 0).sum(1), [1] * 3 + [5] * 3 + [12] * 3)
  every, _, _ = lesion_study.lesion_stack(lay, "multi", num_samples=3, max_k=64)
  assert len(every) == 12 * 3 + 1
  c = depth_config.get_config("cpu")
  assert "ks" not in depth_series.sweep_settings(c, "multi", "stored")
  c.multi.ks = (1, 5, 12)
  assert depth_series.sweep_settings(c, "multi", "stored")["ks"] == [1, 5, 12]
  assert "ks" not in depth_series.sweep_settings(c, "reorder", "stored")
  c.networks = {"net": _exported(tmp_path, 0)}
  for bad in ((5, 1), (0, 2), (2, 2)):
    c.multi.ks = bad
    with pytest.raises(ValueError, match="multi.ks must be increasing whole numbers"):
      depth_series.check_config(c)
  with pytest.raises(ValueError, match="cannot delete k=13 blocks"):
    lesion_study.lesion_stack(lay, "multi", num_samples=1, ks=(13,))
