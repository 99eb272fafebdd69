"""Figures are pure functions of the JSON the engines write (one module per experiment)."""
import matplotlib

matplotlib.use("Agg")  # headless: figures are files

PAPER_STYLE = dict(color="0.35", linestyle="--", marker="x", label="paper (Veit et al., ResNet-110)")
