"""The language model beside the ViT and the ResNet (study/llm_comparison): a pure function of its rows.

(a) one branch deleted, (b) k branches deleted, both as shares of the way from the intact network to chance;
(c) one path's gradient magnitude by path length / n (each network's maximum = 1); (d) the logit lens: the
language model's loss when the readout reads the stream after each sublayer.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save(lm: dict, rows: dict, path: str) -> None:
  fig, ax = plt.subplots(1, 4, figsize=(17, 3.8))
  for (name, r), color in zip(rows.items(), ("C3", "C0", "C2")):
    ax[0].plot(r["positions"], r["single_shares"], "o-", color=color, label=name)
    f, s = zip(*r["k_curve"])
    ax[1].plot(f, s, "o-", color=color, ms=3, label=name)
    g = np.asarray(r["gradient"])
    ax[2].semilogy(np.arange(len(g)) / (len(g) - 1), g, "o-", color=color, ms=3, label=name)
  ax[0].set(xlabel="relative depth of the deleted branch", ylabel="share of the way to chance",
            title="(a) one branch deleted")
  ax[1].set(xlabel="fraction of branches deleted", ylabel="share of the way to chance", title="(b) k deleted")
  ax[2].set(xlabel="path length / n", ylabel="one path's gradient (max = 1)", title="(c) gradient by path length")
  if "lens" in lm:
    loss = [r["loss"] for r in lm["lens"]]
    ax[3].plot(range(len(loss)), loss, "o-", color="C3")
    ax[3].axhline(lm["chance"], color="gray", ls=":", label="uniform")
    ax[3].set_xticks(range(len(loss)), ["emb"] + [f"{i // 2}{'am'[i % 2]}" for i in range(len(loss) - 1)])
    ax[3].set(xlabel="readout after sublayer (a: attention, m: MLP)", ylabel="next-token loss, nats/token",
              title="(d) logit lens (language model)")
    ax[3].legend(fontsize=8)
  ax[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
