"""The lattice study over the configured networks (experiments/lattice.py): checks, one fixed evaluation
subset for all image networks (a fixed set of text windows for a language model), each network's JSON
(`study.lattice`), then the tables and figures from the JSON."""
from __future__ import annotations

import json
import os

from absl import logging

from resnet_ensembles.data import cifar10 as data_lib
from resnet_ensembles.data import text as text_lib
from resnet_ensembles.data import tokenizer as tok_lib
from resnet_ensembles.lesion import lattice, tasks
from resnet_ensembles.plots import lattice as lattice_plots
from resnet_ensembles.store import checkpoints, llama2c
from resnet_ensembles.study import lattice as lattice_study
from resnet_ensembles.study import lattice_tables


def check(config, only: list[str]) -> list[str]:
  """The networks to study, in config.order; one-line errors for unknown names, folders and settings."""
  names = [n for n in config.order if n in config.networks] + [n for n in config.networks if n not in config.order]
  unknown = [n for n in only if n not in config.networks]
  if unknown:
    raise ValueError(f"--only names networks the config lacks: {unknown} (configured: {names})")
  names = [n for n in names if not only or n in only]
  if not names:
    raise ValueError("no networks configured: give --config.networks (name -> trained folder)")
  for name in names:
    if name in config.texts:   # a llama2.c language model: its checkpoint, tokenizer and evaluation text
      for field, f in (("checkpoint", config.networks[name]), ("tokenizer", config.texts[name].tokenizer),
                       ("text", config.texts[name].text)):
        if not os.path.isfile(f):
          raise FileNotFoundError(f"{name}'s {field} {f} does not exist")
      continue
    checkpoints.read_config(config.networks[name])  # FileNotFoundError names a missing folder
    mode = config.modes.get(name, "lattice")
    if mode not in ("lattice", "sampled"):
      raise ValueError(f"modes.{name} must be 'lattice' or 'sampled', got {mode!r}")
  for field in ("test_images", "num_permutations", "batch_size", "memory_budget_mb", "text_windows", "window"):
    if config[field] < (2 if field == "num_permutations" else 1):
      raise ValueError(f"config.{field} must be >= {2 if field == 'num_permutations' else 1}, got {config[field]}")
  return names


def evaluation_split(config) -> data_lib.Split:
  """The fixed evaluation subset every network of the study sees."""
  test = data_lib.load_cifar10("folder" if config.data_folder else "auto", config.data_folder or None)["test"]
  return data_lib.subset(test, config.test_images, config.subset_seed)


def token_task(config, name: str, header) -> tasks.TokenTask:
  """The language model's fixed evaluation: the first `text_windows` windows of `window` tokens of its text."""
  if config.window > header.seq_len:
    raise ValueError(f"config.window {config.window} is longer than {name}'s context {header.seq_len}")
  tok = tok_lib.load(config.texts[name].tokenizer, header.vocab_size)
  x, y = text_lib.windows(text_lib.token_stream(config.texts[name].text, tok), config.window, config.text_windows)
  return tasks.TokenTask(x, y, config.text_batch)


def run(config, names: list[str], out_dir: str) -> None:
  split = None
  for name in names:
    path = config.networks[name]
    if name in config.texts:
      model, variables, header = llama2c.load(path)
      task = token_task(config, name, header)
      logging.info("%s: %d windows of %d tokens", name, len(task.targets), config.window)
      lattice_study.study_network(name, path, None, out_dir, positions=config.positions.get(name), seed=config.seed,
                                  memory_budget_mb=config.memory_budget_mb, loaded=(model, variables, None),
                                  task=task)
      continue
    loaded = checkpoints.load_trained(path)
    mode = config.modes.get(name, "lattice")
    positions = list(config.positions[name]) if name in config.positions else None
    if mode == "lattice":
      lattice.lattice_positions(loaded[0].layout, positions)  # too many branches: one line before any data
    if split is None:
      split = evaluation_split(config)
      logging.info("evaluation subset: %d test images (seed %d)", len(split[1]), config.subset_seed)
    lattice_study.study_network(name, path, split, out_dir, mode=mode, positions=positions,
                                num_permutations=config.num_permutations, seed=config.seed,
                                batch_size=config.batch_size, memory_budget_mb=config.memory_budget_mb,
                                loaded=loaded)
  results = []
  for name in [n for n in config.order if n in config.networks] + [n for n in config.networks
                                                                    if n not in config.order]:
    path = os.path.join(out_dir, f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        r = json.load(f)
      if "correlations_error" not in r:  # written before the error correlations existed: add them
        lattice_study.add_correlations(r, config.seed)
        with open(path, "w") as f:
          json.dump(r, f, indent=1)
      results.append(dict(r, label=config.labels.get(name, name)))
  lattice_tables.write_tables(results, out_dir)
  lattice_plots.draw_all(results, out_dir)
