"""The language-model study of one llama2.c checkpoint (experiments/llm_study.py): each part writes one JSON in
the work folder and is skipped when that JSON is there (a rerun continues where a stop left off).

  checks      the greedy sample and the loss on the evaluation text, beside what the model's author published
              (when the checkpoint is the one published: same sha256)
  single, subsets, orderings, painters, looped, lens, geometry   the sweeps of `lesion.token_study`
  paths       `paths.tokens.analyze`
Every JSON records its config, the checkpoint's sha256, the git commit and its wall time.
"""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
import optax
from absl import logging

from resnet_ensembles.data import text as text_lib
from resnet_ensembles.data import tokenizer as tok_lib
from resnet_ensembles.lesion import tasks, token_study
from resnet_ensembles.models import llama_decode
from resnet_ensembles.paths import tokens as token_paths
from resnet_ensembles.store import llama2c
from resnet_ensembles.utils import provenance

PARTS = ("checks", "single", "subsets", "orderings", "painters", "looped", "lens", "geometry", "paths")


def parts_of(config) -> list[str]:
  parts = [p.strip() for p in config.parts.split(",") if p.strip()]
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    raise ValueError(f"unknown study parts {unknown}; known: {', '.join(PARTS)}")
  return parts


def check_config(config) -> None:
  """One line for anything that would fail later: files, window counts."""
  for name in ("checkpoint", "tokenizer", "text"):
    if not os.path.isfile(config[name]):
      raise FileNotFoundError(f"config.{name}: {config[name]} does not exist")
  for name in ("sweep_windows", "subset_windows", "path_windows", "batch_size", "networks_per_chunk"):
    if config[name] < 1:
      raise ValueError(f"config.{name} must be >= 1, got {config[name]}")
  parts_of(config)


def window_losses(model, variables, x: np.ndarray, y: np.ndarray, batch_size: int) -> np.ndarray:
  """Mean next-token loss of each window [W] (float64), the intact model in batches."""
  fn = jax.jit(lambda v, a, b: optax.softmax_cross_entropy_with_integer_labels(model.apply(v, a), b).mean(-1))
  out = []
  for i in range(0, len(x), batch_size):
    a, b = x[i:i + batch_size], y[i:i + batch_size]
    pad = ((0, batch_size - len(a)), (0, 0))
    out.append(np.asarray(fn(variables, np.pad(a, pad), np.pad(b, pad)), np.float64)[:len(a)])
  return np.concatenate(out)


def checks(model, variables, tok, stream, window, config) -> dict:
  sha = provenance.sha256(config.checkpoint)
  published = json.load(open(config.published)) if os.path.isfile(config.published) else {}
  same = published.get("checkpoint_sha256") == sha
  out = llama_decode.generate(model, variables, [tok_lib.BOS], config.greedy_steps)[0]
  sample = tok.decode(out, previous=tok_lib.BOS)
  x, y = text_lib.windows(stream, window, config.loss_windows)
  per_window = window_losses(model, variables, x, y, config.batch_size)
  spaced = per_window[np.linspace(0, len(x) - 1, min(140, len(x))).round().astype(int)]
  row = dict(greedy_tokens=out.tolist(), greedy_text=sample, loss=float(per_window.mean()),
             loss_se=float(per_window.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else None,
             loss_140_spaced=float(spaced.mean()), windows=int(len(x)), window=window,
             tokens=int(x.size), text_tokens=int(len(stream)), uniform_loss=float(np.log(model.vocab_size)))
  if same:
    want = tok.encode(published["greedy_text"], bos=False)
    row.update(published_loss=published["validation_loss"], published_loss_note=published["validation_loss_note"],
               greedy_equal_to_published=out[:len(want)].tolist() == want and len(out) >= len(want),
               greedy_first_difference=next((i for i, (a, b) in enumerate(zip(out, want)) if a != b), None))
  return row


def _middle_spans(depth: int) -> list[tuple[int, int]]:
  """Every middle span of >= 2 layers (the first and last layers never in it), for the looped variant."""
  return [(s, n) for n in range(2, depth - 1) for s in range(1, depth - n)]


def run(config, workdir: str) -> dict:
  """Every part the config names, each into workdir/<part>.json; returns {part: its JSON}."""
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  model, variables, header = llama2c.load(config.checkpoint)
  tok = tok_lib.load(config.tokenizer, header.vocab_size)
  window = config.window or header.seq_len
  if window > header.seq_len:
    raise ValueError(f"config.window {window} is longer than the model's context {header.seq_len}")
  stream = text_lib.token_stream(config.text, tok)
  windows = lambda count: text_lib.windows(stream, window, count)
  task = lambda count: tasks.TokenTask(*windows(count), config.batch_size)
  kw = dict(networks_per_chunk=config.networks_per_chunk)
  jobs = {
      "checks": lambda: checks(model, variables, tok, stream, window, config),
      "single": lambda: {"rows": token_study.single(model, variables, task(config.sweep_windows), **kw)},
      "subsets": lambda: {"rows": token_study.subsets(model, variables, task(config.subset_windows), **kw)},
      "orderings": lambda: {"rows": token_study.orderings(model, variables, task(config.sweep_windows), **kw)},
      "painters": lambda: {"rows": token_study.painters_variants(model, variables, task(config.sweep_windows),
                                                                 config.shuffles, **kw)},
      "lens": lambda: {"rows": token_study.logit_lens(model, variables, task(config.sweep_windows))},
      "looped": lambda: {"rows": token_study.looped_parallel(model, variables, task(config.sweep_windows),
                                                             _middle_spans(header.n_layers))},
      "geometry": lambda: token_study.stream_geometry(model, variables, task(config.sweep_windows)),
      "paths": lambda: token_paths.analyze(model, variables, *windows(config.path_windows),
                                           max_routes=config.max_routes),
  }
  windows_of = {"single": config.sweep_windows, "subsets": config.subset_windows, "orderings": config.sweep_windows,
                "painters": config.sweep_windows, "looped": config.sweep_windows, "lens": config.sweep_windows,
                "geometry": config.sweep_windows, "paths": config.path_windows}
  out, sha = {}, provenance.sha256(config.checkpoint)
  for part in parts_of(config):
    path = os.path.join(workdir, f"{part}.json")
    if os.path.isfile(path):
      out[part] = json.load(open(path))
      logging.info("llm study: %s kept (%s)", part, path)
      continue
    t0 = time.time()
    logging.info("llm study: %s ...", part)
    result = jobs[part]()
    result.update(part=part, seconds=time.time() - t0, checkpoint_sha256=sha, commit=provenance.git_commit(),
                  config=config.to_dict(), num_blocks=model.layout.num_blocks, layers=header.n_layers,
                  window=window, windows=windows_of.get(part, result.get("windows")))
    tmp = path + ".tmp"
    json.dump(result, open(tmp, "w"), indent=1)
    os.replace(tmp, path)
    logging.info("llm study: %s done in %.0f s", part, result["seconds"])
    out[part] = result
  return out
