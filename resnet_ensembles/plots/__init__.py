"""Figures are pure functions of the JSON the engines write (one module per experiment)."""
import matplotlib

matplotlib.use("Agg")  # headless: figures are files

PAPER_STYLE = dict(color="0.35", linestyle="--", marker="x", label="paper (Veit et al., ResNet-110)")


def legend_below(ax, fontsize: int = 8, ncol: int = 1) -> None:
  """The legend under the axes, so it never hides data (the figure is saved with bbox_inches="tight")."""
  ax.legend(fontsize=fontsize, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, frameon=False)
