"""Trained networks on disk: orbax checkpoints of a run, exported folders, `load_trained(path)` and the
network fingerprint (`checkpoints`). Imports `models` (to build what a config names), never a trainer."""
