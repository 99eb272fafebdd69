"""Training curves (train loss and test error per epoch) from a run's metrics.jsonl rows."""
from __future__ import annotations

import matplotlib.pyplot as plt


def run_title(config, data: str) -> str:
  """The curves' title from a run's config: the network ("resnet-32 (preact, stochastic depth)", "vit-6 (width
  128, 4 heads)": any model family, its variant or size as its config has them) and what it trained on."""
  m = config.model
  detail = [m.variant] if "variant" in m else [f"width {m.width}, {m.heads} heads"] if "width" in m else []
  kind = config.train_mask.kind if "train_mask" in config else "none"
  detail += [] if kind == "none" else [kind.replace("_", " ")]
  return f"{m.name}-{m.depth}" + (f" ({', '.join(detail)})" if detail else "") + f", {data}"


def plot_training_curves(rows: list[dict], steps_per_epoch: int, title: str, path: str) -> str:
  train = [(r["step"] / steps_per_epoch, r["train/loss"]) for r in rows if "train/loss" in r]
  test = [(r["eval/epoch"], 100 * r["eval/test_error"]) for r in rows if "eval/test_error" in r]
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
  ax1.plot(*zip(*train), lw=0.8)
  ax1.set(xlabel="epoch", ylabel="train loss (window mean)", yscale="log", title="training loss")
  ax2.plot(*zip(*test), marker=".", lw=1)
  ax2.set(xlabel="epoch", ylabel="test error (%)", title=f"test error (final {test[-1][1]:.2f}%)")
  ax2.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
