"""The language-model study (experiments/llm_study.py) of a llama2.c checkpoint: its files, the evaluation
windows of each part, the engines' chunking.

  cpu   stories260K (5 layers, 10 sublayers) on a 2-core CPU: the loss on every window of the evaluation text;
        single deletions, orderings, Painters' variants and the logit lens on 8 windows of 512 tokens; all
        1,024 subsets on 2 windows; the path analysis on 1 window
  gpu   the same study on a GPU-sized evaluation (64 windows for the sweeps, 16 for the subsets, 4 for paths)
  tiny  a smoke run for tests: 64-token windows, 2 windows per sweep, 1 for the subsets and paths
Paths are relative to the repository; other checkpoints: --config.checkpoint=... --config.tokenizer=...
"""
import ml_collections

STORIES = "../shared/data/pretrained/llama2c-stories260K"


def get_config(arg: str = "cpu") -> ml_collections.ConfigDict:
  if arg not in ("cpu", "gpu", "tiny"):
    raise ValueError(f"llm_study config must be cpu, gpu or tiny, got {arg!r}")
  c = ml_collections.ConfigDict()
  c.checkpoint = f"{STORIES}/stories260K.bin"
  c.tokenizer = f"{STORIES}/tok512.bin"
  c.text = f"{STORIES}/tinystories/valid_first1000.txt"
  c.published = "resnet_ensembles/store/llama2c_published.json"  # used when the checkpoint's sha256 matches
  c.window = 0                  # tokens per window; 0: the model's context
  c.loss_windows = 0            # 0: every window of the text
  c.sweep_windows = {"cpu": 8, "gpu": 64, "tiny": 2}[arg]
  c.subset_windows = {"cpu": 2, "gpu": 16, "tiny": 1}[arg]
  c.path_windows = {"cpu": 1, "gpu": 4, "tiny": 1}[arg]
  c.max_routes = 16             # routes per path length (all of them where there are fewer)
  c.batch_size = 4              # windows per batch
  c.networks_per_chunk = 16     # configurations per compiled program
  c.shuffles = 3                # Painters' shuffles per span length
  c.greedy_steps = 200
  c.parts = "checks,single,subsets,orderings,painters,looped,lens,geometry,paths"
  if arg == "tiny":
    c.window, c.loss_windows, c.greedy_steps, c.max_routes = 64, 4, 24, 4
  return c
