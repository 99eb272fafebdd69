import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED_CIFAR = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10-jpeg")


@pytest.fixture(scope="session")
def cifar_root() -> str:
  root = os.environ.get("CIFAR10_DIR") or SHARED_CIFAR
  if not os.path.isdir(root):
    pytest.skip(f"CIFAR-10 folder copy not found at {root} (set CIFAR10_DIR)")
  return root


@pytest.fixture(scope="session")
def cifar(cifar_root):
  from resnet_ensembles.data import cifar10 as data
  return data.load_cifar10("folder", cifar_root)
