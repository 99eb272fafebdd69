"""Training curves (train loss and test error per epoch) from a run's metrics.jsonl rows."""
from __future__ import annotations

import matplotlib.pyplot as plt


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
