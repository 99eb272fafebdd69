r"""Per-example path usage of a trained ResNet: which path lengths carry each test image's gradient, and
whether images that lean on long paths are the ones single-block deletions break.

  python -m experiments.path_usage --workdir=results/repro/train/resnet --out_dir=results/paths/per_example \
      [--test_size=0] [--batch_size=50] [--method=exact|sampled] [--max_images=N] \
      [--single_sweep=results/repro/lesion/resnet/single_stored.json]

Writes <out_dir>/per_example.json (config, git commit, per-image summaries, group quantiles, the lesion
link) and per_example.png drawn from the JSON alone (resnet_ensembles/plots/per_example.py), plus
per_example_profiles.npz (every image's ||G_k|| curves). Images are taken in a seeded random order, so any
finished prefix is a uniform random sample; the costly parts are written chunk by chunk under
<out_dir>/chunks/ (profiles and per-image predictions of the full network and of every single deletion, by
lesion.wavefront, in one file per chunk) and a rerun of the same command reuses them, so a kill loses at
most one chunk. --max_images=N analyses the first N images of the order.
--single_sweep: a committed single-deletion sweep JSON whose per-lesion errors are checked against the
errors of the per-image predictions computed here (same network by fingerprint).
"""
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.data import for_run as study_data
from resnet_ensembles.lesion.wavefront import wavefront_logits
from resnet_ensembles.paths import per_example as pe, per_example_report as pe_report
from resnet_ensembles.plots import per_example as plots
from resnet_ensembles.store import checkpoints
from resnet_ensembles.utils.logs import one_line_errors, parse_flags
from resnet_ensembles.utils.provenance import git_commit

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained ResNet: a training workdir or an exported folder.")
_OUT = flags.DEFINE_string("out_dir", None, "Default: <workdir>/per_example.")
_TEST_SIZE = flags.DEFINE_integer("test_size", 0, "Test images (0: all), a seeded subset as data.subset.")
_BATCH = flags.DEFINE_integer("batch_size", 50, "Images per tape (exact decomposition) and per lesion batch.")
_METHOD = flags.DEFINE_enum("method", "exact", pe.METHODS, "exact G_k, or sampled routes (deep networks).")
_SAMPLES = flags.DEFINE_integer("samples_per_length", 4, "method=sampled: routes of each length per batch.")
_SHARE = flags.DEFINE_float("share", 0.9, "Share of an image's profile its effective window must carry.")
_CHUNK = flags.DEFINE_integer("chunk_size", 500, "Images per chunk file.")
_SWEEP = flags.DEFINE_string("single_sweep", None, "Optional committed single-deletion sweep JSON to check against.")
_TOP = flags.DEFINE_integer("grid", 16, "Images shown at each end of the mean-path-length order.")
_RESAMPLES = flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples for the correlation intervals.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the image order, sampled routes and the bootstrap.")
_MAX_IMAGES = flags.DEFINE_integer("max_images", 0, "Only the first this many images of the seeded random order "
                                   "(0: all); chunks already written are reused.")
flags.mark_flags_as_required(["workdir"])


@functools.lru_cache(maxsize=None)
def _wavefront_fn(model):
  return jax.jit(lambda v, x: jnp.argmax(wavefront_logits(model, v, data_lib.normalize_for(model, x)), -1))


def deletion_predictions(model, variables, images, batch_size):
  """Predictions [n+1, N]: row 0 the full network, row 1+i the network without block i (stored BN),
  by the prefix-shared wavefront (lesion.wavefront)."""
  fn = _wavefront_fn(model)
  return np.concatenate([np.asarray(fn(variables, jnp.asarray(images[s:s + batch_size])))
                         for s in range(0, len(images), batch_size)], axis=1)


def run_chunks(model, variables, images, labels, order, chunk_dir, tag):
  """Chunk by chunk in `order` (a seeded permutation, so any finished prefix is a uniform random sample):
  profiles and single-deletion predictions of each chunk, written to one file; a rerun reuses them."""
  parts, t0, computed = [], time.time(), 0
  for start in range(0, len(order), _CHUNK.value):
    idx = order[start:start + _CHUNK.value]
    path = os.path.join(chunk_dir, f"chunk{tag}_{start:06d}_{start + len(idx):06d}.npz")
    if os.path.exists(path):
      with np.load(path) as z:
        parts.append({k: z[k] for k in z.files})
      continue
    t = time.time()
    prof = pe.profile_dataset(model, variables, images[idx], labels[idx], batch_size=_BATCH.value,
                              method=_METHOD.value, samples_per_length=_SAMPLES.value, seed=_SEED.value + start,
                              chunk_size=len(idx))
    t_prof = time.time() - t
    preds = deletion_predictions(model, variables, images[idx], _BATCH.value)
    part = {k: v for k, v in prof.items() if k not in ("seconds", "computed_images")}
    part.update(preds=preds, index=np.asarray(idx), seconds=np.array([t_prof, time.time() - t - t_prof]))
    np.savez(path + ".tmp.npz", **part)
    os.replace(path + ".tmp.npz", path)
    parts.append(part)
    computed += len(idx)
    done = start + len(idx)
    logging.info("path_usage: %d/%d images (profiles %.0f s, deletions %.0f s this chunk; %.0f s, ETA %.0f s)",
                 done, len(order), t_prof, time.time() - t - t_prof, time.time() - t0,
                 (time.time() - t0) / max(computed, 1) * (len(order) - done))
  out = {k: np.concatenate([p[k] for p in parts], axis=1 if k == "preds" else 0) for k in parts[0] if k != "seconds"}
  secs = np.stack([p["seconds"] for p in parts])
  return out, dict(profiles_all_chunks=float(secs[:, 0].sum()), deletions_all_chunks=float(secs[:, 1].sum()),
                   images_computed_this_run=computed, chunks_this_run_s=time.time() - t0)


@one_line_errors
def main(argv):
  del argv
  t_start = time.time()
  model, variables, trained = checkpoints.load_trained(_WORKDIR.value)
  pe.check_model(model)
  if trained.model.name == "imagenet_resnet":
    raise ValueError("path_usage reads CIFAR-10 test images; an ImageNet network is not supported here")
  images, labels = study_data.load_for_study(trained, test_size=_TEST_SIZE.value)["test"]
  data_desc = study_data.describe_folder(os.environ["CIFAR10_DIR"]) if os.environ.get("CIFAR10_DIR") else "CIFAR-10"
  sha = checkpoints.fingerprint(variables)
  out_dir = _OUT.value or os.path.join(_WORKDIR.value, "per_example")
  chunk_dir = os.path.join(out_dir, "chunks")
  os.makedirs(chunk_dir, exist_ok=True)
  n = model.layout.num_blocks
  order = np.random.default_rng(_SEED.value).permutation(len(labels))
  if _MAX_IMAGES.value > 0:
    order = order[:_MAX_IMAGES.value]
  tag = f"_{sha}_{_METHOD.value}_{len(labels)}_seed{_SEED.value}" + (f"_s{_SAMPLES.value}" if _METHOD.value == "sampled" else "")
  logging.info("path_usage: %d-block %s, %d of %d test images, %s profiles, batch %d", n, trained.model.variant,
               len(order), len(labels), _METHOD.value, _BATCH.value)
  prof, seconds = run_chunks(model, variables, images, labels, order, chunk_dir, tag)
  idx = prof["index"]
  sweep = None
  if _SWEEP.value:
    with open(_SWEEP.value) as f:
      sweep = json.load(f)
  result = pe_report.analyze(prof, prof["preds"], labels[idx], images[idx], share=_SHARE.value, grid=_TOP.value,
                      n_resamples=_RESAMPLES.value, seed=_SEED.value, sweep=sweep if len(idx) == len(labels) else None,
                      variables_sha256=sha, class_names=list(data_lib.CIFAR10_CLASSES), test_index=idx)
  result.update(method=_METHOD.value, num_blocks=n, data=data_desc, workdir=_WORKDIR.value,
                variables_sha256=sha, model=trained.model.to_dict(), git_commit=git_commit(),
                flags={k: flags.FLAGS[k].value for k in ("workdir", "out_dir", "test_size", "batch_size", "method",
                                                          "samples_per_length", "share", "chunk_size",
                                                          "single_sweep", "grid", "bootstrap", "seed", "max_images")},
                test_images_total=len(labels), images_analyzed=len(idx),
                seconds=dict(seconds, total_this_run=time.time() - t_start))
  np.savez_compressed(os.path.join(out_dir, "per_example_profiles.npz"),
                      **{k: prof[k].astype(np.float32) for k in ("image", "block0", "full_image", "full_block0", "loss")},
                      labels=labels[idx], test_index=idx, single_deletion_predictions=prof["preds"].astype(np.int8))
  stem = os.path.join(out_dir, "per_example")
  with open(stem + ".json", "w") as f:
    json.dump(result, f, indent=1)
  with open(stem + ".json") as f:  # the figure is a function of the JSON alone
    plots.save(json.load(f), stem + ".png")
  for line in pe_report.headline(result):
    print(line)
  print(f"wrote {stem}.json, {stem}.png ({time.time() - t_start:.0f} s)")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
