r"""CIFAR-10 training configs: He et al.'s ResNets and their plain counterparts.

  python -m experiments.train --config=experiments/configs/cifar10.py:resnet110 --workdir=runs/r110

The argument is a base network (resnet20 ... resnet1202, plain20 ... plain1202; append "_original" for
He et al. 2016a blocks, e.g. resnet56_original) followed by comma-separated modifiers:
  quick   a short CPU smoke run: 1 epoch on 5,000 training images, 2,000 test images;
  cpu     the CPU defaults of this project (fastest measured settings, see benchmarks/): 40 epochs;
          the arg "cpu" alone means resnet32,cpu (the ResNet every CPU experiment studies);
  sd      stochastic depth (Huang et al.): p_l decays linearly to p_L = 0.5, branches scaled by p_l at test;
          one mask per mini-batch as in Huang et al., or per example with train_mask.per_example=True;
  sp_forward / sp_route   short-path training (Veit et al. Sec. 5.3): each mini-batch trains a random
          K = round(23/54 n) blocks, (a) running only those blocks, or (b) running all blocks forward and
          backpropagating into the K branches only (and through every skip: paths of length 0..K);
          `train_mask.num_active` sets K,
          `train_mask.scale_at_test` (modifier `scaled`) scales branches by K/n at test time for (a).
Any field can be overridden: --config.num_epochs=3 --config.data.folder=/path/to/cifar10-jpeg.
Data: config.data.folder (or the CIFAR10_DIR environment variable) points at a folder copy laid out
<root>/<split>/<class>/*.jpg; otherwise TFDS `cifar10` is used.
"""
from resnet_ensembles.training.recipes import get_config  # noqa: F401 (the recipes live in the library)
