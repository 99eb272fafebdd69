r"""The lesion and path study of a llama2.c language model: readers checked against what its author published,
single and whole-layer deletions, all subsets, every layer order, Painters' variants, the logit lens, paths.

  python -m experiments.llm_study --config=experiments/configs/llm_study.py:cpu --workdir=runs/llm
  python -m experiments.llm_study --config=experiments/configs/llm_study.py:gpu --workdir=runs/llm_big \
      --config.checkpoint=PATH/model.bin --config.tokenizer=PATH/tokenizer.bin --config.text=PATH/text.txt

Each part is one JSON in --workdir, kept on a rerun; then the summary (summary.md, summary.json, summary.png)
beside the ViT and ResNet of --compare_with. --summary_only redraws the summary from the JSONs there.
"""
from absl import app, flags
from ml_collections import config_flags

from resnet_ensembles.store import lock
from resnet_ensembles.study import llm_comparison, llm_study
from resnet_ensembles.utils.logs import one_line_errors, parse_flags, setup_logging

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/llm_study.py:cpu",
                                          "study config file[:cpu|gpu|tiny]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "folder of the study's JSONs, figure and tables")
_SUMMARY_ONLY = flags.DEFINE_bool("summary_only", False, "only redraw the summary from the JSONs in --workdir")
_COMPARE_WITH = flags.DEFINE_string("compare_with", "results/vit/study/comparison.json",
                                    "the ViT study's comparison.json (its ViT and ResNet rows); empty: none")
flags.mark_flags_as_required(["workdir"])


@one_line_errors
def main(argv):
  del argv
  setup_logging()
  workdir = _WORKDIR.value
  with lock.hold(workdir):
    if not _SUMMARY_ONLY.value:
      llm_study.run(_CONFIG.value, workdir)
    llm_comparison.write(workdir, _COMPARE_WITH.value or None)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
