r"""Path analysis of a trained ResNet (Veit et al. Sec. 5.2, Fig. 6): a JSON, then a PNG drawn from it.

  python -m experiments.paths --workdir=runs/r110 [--config=experiments/configs/paths.py:paper]

Writes <output_dir>/paths.json (config, git commit, every curve) and paths.png (Fig. 6 a-d); the
figure is redrawn from the JSON alone (resnet_ensembles/plots/paths.py). On several hosts run the same
command on every host (docs/parallel.md); process 0 writes.
"""
import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from resnet_ensembles.store import checkpoints, lock
from resnet_ensembles.parallel import distributed
from resnet_ensembles.paths import analysis as paths
from resnet_ensembles.data import for_run as study_data
from resnet_ensembles.utils.logs import one_line_errors, parse_flags
from resnet_ensembles.plots import paths as paths_plots
from resnet_ensembles.utils.provenance import git_commit

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "paths.py"),
    "Path-analysis config file[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Trained ResNet: a training workdir or an exported folder.")
_OUT = flags.DEFINE_string("output_dir", None, "Default: <workdir>/paths.")
flags.mark_flags_as_required(["workdir"])
distributed.define_flags()



@one_line_errors
def main(argv):
  distributed.start_main(argv)
  config = _CONFIG.value
  if config.split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {config.split!r}")
  model, variables, trained = checkpoints.load_trained(_WORKDIR.value)  # a wrong --workdir: nothing created
  paths.check_model(model)
  out_dir = _OUT.value or os.path.join(_WORKDIR.value, "paths")
  with lock.hold(out_dir, hint="use another --output_dir"):  # before the analysis: a second one fails at once
    analyze_and_write(config, model, variables, trained, out_dir)


def analyze_and_write(config, model, variables, trained, out_dir: str) -> None:
  need = config.num_batches * config.batch_size  # ImageNet loads only the images sampled; CIFAR-10 all of them
  imagenet = trained.model.name == "imagenet_resnet"
  images, labels = study_data.load_for_study(trained, test_size=need if imagenet else None, train_size=need,
                                   seed=config.seed)[config.split]
  logging.info("paths: %d-block %s, %d routes per length over %d batches of %d (%s BN)", model.layout.num_blocks,
               trained.model.variant, config.samples_per_length, config.num_batches, config.batch_size, config.bn)
  result = paths.analyze(model, variables, images, labels, config)
  result.update(config=config.to_dict(), git_commit=git_commit(), workdir=_WORKDIR.value,
                model=trained.model.to_dict())
  if not distributed.is_main_process():
    return
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, "paths")
  with open(stem + ".json", "w") as f:
    json.dump(result, f, indent=1)
  with open(stem + ".json") as f:  # the figure is a function of the JSON alone
    paths_plots.save(json.load(f), stem + ".png")
  r, e = result["effective_range"]["image"], result["exact"]
  print(f"effective paths (image gradient, {100 * r['share']:.0f}% of the total): lengths {r['lo']}-{r['hi']} "
        f"of {result['num_blocks']}, {100 * r['path_fraction']:.2f}% of all paths; exact decomposition sums to "
        f"the gradient within {e['sum_error']:.1e} (relative)")
  d = result["decay"]["image"]
  print(f"one path's gradient (input image) falls x{d['factor_per_block']:.3g} per block along its length "
        f"(exponential fit, r^2 {d['r2']:.3f})")
  print(f"wrote {stem}.json, {stem}.png")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
