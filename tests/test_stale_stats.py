"""What stale BatchNorm statistics explain: paired per lesion, in absolute errors against the deployed network."""
import json
import os

import numpy as np
import pytest

from resnet_ensembles.study import series, series_table, stale_stats


def _sweep(full: float, errors: list[float], recalibration=None) -> dict:
  rows = [{"deleted": i, "stage": 0, "opener": i == 0, "error": e} for i, e in enumerate(errors)]
  return {"test_images": 10000, "networks": [{"full_error": full, "num_blocks": len(errors), "stage_openers": [0],
                                              "recalibration": recalibration, "rows": rows}]}


def test_share_is_taken_from_absolute_errors_against_the_deployed_network(tmp_path):
  folder = tmp_path / "net"
  folder.mkdir()
  stored = _sweep(0.10, [0.40, 0.14, 0.16, 0.12])
  # all re-estimated: the intact network itself shifts to 0.11, and the lesions come out 0.13 / 0.15 / 0.11
  shifted = _sweep(0.11, [0.20, 0.13, 0.15, 0.11], "every statistic")
  for name, obj in (("single_stored", stored), ("single_recalibrate_all", shifted)):
    with open(folder / f"{name}.json", "w") as f:
      json.dump(obj, f)
  e = stale_stats.network_effect(series.load_json, str(folder), "recalibrate_all")
  t = e["typical"]
  assert e["deployed"] == 0.10 and e["intact_recalibrated"] == 0.11 and e["scope"] == "every statistic"
  assert t["stored_error"] == pytest.approx(0.14) and t["recalibrated_error"] == pytest.approx(0.13)
  assert t["stored_cost"] == pytest.approx(0.04) and t["cost"] == pytest.approx(0.03)  # over 0.10, not 0.11
  assert t["change"] == pytest.approx(-0.01)
  assert t["share"] == pytest.approx(0.25)  # not 1 - 0.02 / 0.04 = 50%, the costs over two baselines
  assert e["opener"]["share"] == pytest.approx(0.2 / 0.3)
  assert [r["cost"] for r in e["rows"]] == pytest.approx([0.10, 0.03, 0.05, 0.01])
  # The depth-series summary reports the same cost over the deployed network, and the table says so.
  s = series.network_summary(str(folder), "recalibrate_all")
  assert s["full"] == 0.10 and s["intact"] == 0.11 and s["typical_mean_cost"] == pytest.approx(0.03)
  summary = {"networks": {"net": {"recalibrate_all": dict(s, stale=e)}}}
  row = series_table.stale_table(summary, {"net": "tiny"}, "recalibrate_all")[2]
  assert row.startswith("| tiny | 4 | 10.00 | 14.00 -> 13.00 | +3.00 ± ") and "| -1.00 ± 0.00 (25%) | 40.00 -> 20.00 | +10.00 | -20.00 (67%) | n/a |" in row


def test_sweeps_of_different_lesions_are_not_paired():
  stored = _sweep(0.10, [0.40, 0.14, 0.16])["networks"][0]
  other = _sweep(0.10, [0.40, 0.14, 0.16])["networks"][0]
  other["rows"][1]["deleted"] = 2
  with pytest.raises(ValueError, match="do not delete the same blocks"):
    stale_stats.paired_rows(stored, other)
  assert stale_stats.group_effect([], 0.1) is None
  np.testing.assert_allclose([r["change"] for r in stale_stats.paired_rows(stored, stored)], 0)


def test_a_sweep_of_the_other_scope_is_refused_and_folders_without_a_pair_are_not_yet_swept(tmp_path):
  swept, empty = tmp_path / "swept", tmp_path / "empty"
  swept.mkdir(), empty.mkdir()
  for name, obj in (("single_stored", _sweep(0.10, [0.40, 0.14, 0.16])),
                    ("single_recalibrate", _sweep(0.10, [0.20, 0.12, 0.13], "every statistic"))):
    with open(swept / f"{name}.json", "w") as f:
      json.dump(obj, f)
  with pytest.raises(ValueError, match="re-estimated every statistic, not what bn=recalibrate does"):
    stale_stats.network_effect(series.load_json, str(swept), "recalibrate")
  with open(swept / "single_recalibrate.json", "w") as f:
    json.dump(_sweep(0.10, [0.20, 0.12, 0.13], "from the first changed position"), f)
  folders = stale_stats.parse_folders([f"ResNet={swept}", f"plain={empty}"])
  summary = stale_stats.folders_summary(series.load_json, folders, "recalibrate")
  rows = series_table.stale_table(summary, {}, "recalibrate")
  assert rows[2].startswith("| ResNet | 3 | 10.00 | 15.00 -> 12.50 | +2.50 ± 0.50 | -2.50 ± 0.50 (50%) | 40.00 -> 20.00")
  assert rows[3] == "| plain | not yet swept |||||||||"
  for bad, msg in (("ResNet", "takes label=folder"), (f"x={tmp_path / 'nope'}", "is not a folder")):
    with pytest.raises(ValueError, match=msg):
      stale_stats.parse_folders([bad])
