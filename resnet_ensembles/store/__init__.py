"""Trained networks on disk: orbax checkpoints of a run, exported folders, `load_trained(path)` and the
network fingerprint (`checkpoints`); PyTorch state dicts read without torch (`torch_reader`, its restricted
unpickler `torch_pickle`) and mapped onto the CIFAR ResNets (`torch_import`). Imports `models` (to build what
a config names), never a trainer."""
