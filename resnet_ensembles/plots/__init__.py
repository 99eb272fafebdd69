"""Figures are pure functions of the JSON the engines write (one module per experiment)."""
import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

PAPER_STYLE = dict(color="0.35", linestyle="--", marker="x", label="paper (Veit et al., ResNet-110)")


def legend_below(ax, fontsize: int = 8, ncol: int = 1) -> None:
  """The legend under the axes, so it never hides data (`save_figure` keeps it inside the file)."""
  ax.legend(fontsize=fontsize, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, frameon=False)


def save_figure(fig, path: str, dpi: int = 130) -> str:
  """Writes `fig` to `path`, cropped to what it draws (legends below the axes included), and frees it."""
  fig.savefig(path, dpi=dpi, bbox_inches="tight")
  plt.close(fig)
  return path
