"""Full ResNet-32: test error with stored BN vs BN recalibrated on N x 128 un-augmented training images."""
import json, sys, time
import numpy as np
from resnet_ensembles.store import checkpoints
from resnet_ensembles.lesion import sweep as lesion
from resnet_ensembles.data import for_run as study_data
model, variables, config = checkpoints.load_trained("/work/runs/repro/train/resnet")
data = study_data.load_for_study(config, test_size=0)
n = model.layout.num_blocks
full = np.ones((1, n), np.float32)
out = {"stored": float(lesion.evaluate(model, variables, data["test"], full)["error"][0])}
print("stored", out["stored"], flush=True)
for nb in (4, 16, 64):
  for seed in (0, 1, 2):
    t = time.time()
    e = float(lesion.evaluate(model, variables, data["test"], full, bn="recalibrate", recal_split=data["train"],
                              recal_batches=nb, seed=seed)["error"][0])
    out[f"recal_{nb}x128_seed{seed}"] = e
    print(nb, seed, e, f"{time.time() - t:.0f}s", flush=True)
json.dump(out, open("/work/runs/recal_check/full_network.json", "w"), indent=1)
