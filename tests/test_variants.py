import pytest

from resnet_ensembles.plots import variants


def _single(errors, openers=(0, 3), full=0.1):
  rows = [{"deleted": i, "opener": i in openers, "error": e} for i, e in enumerate(errors)]
  return {"networks": [{"full_error": full, "rows": rows}]}


def _multi(by_k):
  return {"networks": [{"rows": [{"k": k, "error": e} for k, es in by_k.items() for e in es]}]}


def test_summary_and_figure(tmp_path):
  single = _single([0.5, 0.2, 0.3, 0.6, 0.1])
  multi = _multi({1: [0.2, 0.4], 5: [0.5, 0.7]})
  row = variants.summarize(single, multi)
  assert row["single_mean_error"] == pytest.approx(0.2)        # blocks 1, 2, 4
  assert row["single_opener_mean_error"] == pytest.approx(0.55)  # blocks 0, 3
  assert row["k_mean_error"] == {1: pytest.approx(0.3), 5: pytest.approx(0.6)}
  variants.save({"normal": (single, multi), "sd": (_single([0.1] * 5), multi)}, str(tmp_path / "f.png"))
  assert (tmp_path / "f.png").stat().st_size > 10_000


def test_missing_lesion_json_is_clear(tmp_path):
  from experiments import variants as main
  with pytest.raises(FileNotFoundError, match="run experiments.lesion --sweep=single"):
    main.read_variants([f"normal={tmp_path}"], "stored")
  with pytest.raises(ValueError, match="label=folder"):
    main.read_variants([str(tmp_path)], "stored")
