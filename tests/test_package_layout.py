"""The package's dependency structure: layers with no arrow running back up, no import cycle, and no import
from the library into experiments/ (the mains and their configs sit above the library: a library module that
read them would tie the library to one set of command-line configs).

Every `import` in every module (top-level and function-local alike, and `importlib.import_module` of a literal
name) is read with `ast`, so a lazy import that would close a cycle is caught too; then every module is
imported for real.
"""
import ast
import importlib
import pathlib
import pkgutil

import resnet_ensembles

ROOT = pathlib.Path(resnet_ensembles.__file__).parent
# capability -> layer: a module may import its own capability or a lower layer, nothing level or above.
LAYERS = {"utils": 0, "paper": 0, "parallel": 1, "models": 1, "data": 1, "store": 2,
          "training": 3, "lesion": 3, "paths": 3, "plots": 4, "study": 5}


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in ROOT.rglob("*.py"):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = path
  return out


def _imports(path: pathlib.Path, modules: dict) -> set[str]:
  """The package modules `path` imports (a `from pkg import sub` counts as importing `pkg.sub`)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.add(node.module)
      found.update(f"{node.module}.{a.name}" for a in node.names)
    elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
          and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
      found.add(node.args[0].value)
  return {m for m in found if m in modules} | {m for m in found if _is_experiments(m)}


def _is_experiments(module: str) -> bool:
  return module == "experiments" or module.startswith("experiments.")


def _capability(module: str) -> str:
  return module.split(".")[1] if module.count(".") else ""


def find_cycle(graph: dict[str, set[str]]):
  """One import cycle of `graph` as a list of modules (first == last), or None."""
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for d in sorted(graph.get(m, ())):
      if state.get(d) == "open":
        return stack[stack.index(d):] + [d]
      if d not in state and (cycle := visit(d)):
        return cycle
    stack.pop()
    state[m] = "done"
    return None

  for m in sorted(graph):
    if m not in state and (cycle := visit(m)):
      return cycle
  return None


def wrong_way(deps: dict[str, set[str]]) -> list[str]:
  """Every import that points sideways or up a layer, or from the library into experiments/."""
  wrong = []
  for name, imported in deps.items():
    here = _capability(name)
    for dep in imported:
      if _is_experiments(dep):
        wrong.append(f"{name} -> {dep} (the library imports nothing from experiments/: pass a config in)")
        continue
      there = _capability(dep)
      if here and there and there != here and LAYERS[there] >= LAYERS[here]:
        wrong.append(f"{name} (layer {LAYERS[here]}) -> {dep} (layer {LAYERS[there]})")
  return sorted(wrong)


def _deps() -> dict[str, set[str]]:
  modules = _modules()
  return {m: {d for d in _imports(p, modules) if d != m and not m.startswith(d + ".")} for m, p in modules.items()}


def test_every_capability_has_a_layer():
  assert {_capability(m) for m in _modules()} - {""} <= set(LAYERS)


def test_every_import_points_down_a_layer():
  wrong = wrong_way(_deps())
  assert not wrong, "imports pointing sideways or up:\n" + "\n".join(wrong)


def test_no_import_cycle():
  graph = {m: {d for d in ds if not _is_experiments(d)} for m, ds in _deps().items()}
  assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_every_module_imports():
  for info in pkgutil.walk_packages(resnet_ensembles.__path__, "resnet_ensembles."):
    importlib.import_module(info.name)


def test_the_checks_catch_a_cycle_and_a_wrong_way_import():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None
  deps = {"resnet_ensembles.store.checkpoints": {"resnet_ensembles.training.loop", "resnet_ensembles.models.cifar"},
          "resnet_ensembles.lesion.sweep": {"resnet_ensembles.paths.gradients", "experiments.train"},
          "resnet_ensembles.study.stages": {"experiments.configs.cifar10", "resnet_ensembles.lesion.sweep"}}
  why = "(the library imports nothing from experiments/: pass a config in)"
  assert wrong_way(deps) == [
      "resnet_ensembles.lesion.sweep (layer 3) -> resnet_ensembles.paths.gradients (layer 3)",
      f"resnet_ensembles.lesion.sweep -> experiments.train {why}",
      "resnet_ensembles.store.checkpoints (layer 2) -> resnet_ensembles.training.loop (layer 3)",
      f"resnet_ensembles.study.stages -> experiments.configs.cifar10 {why}"]  # the top layer included


def test_the_import_reader_sees_every_form_of_import(tmp_path):
  src = tmp_path / "m.py"
  src.write_text("import experiments\nfrom experiments.configs import cifar10\nimport importlib\n"
                 "def f():\n  return importlib.import_module('experiments.train')\n"
                 "import experimental_thing\n")
  assert _imports(src, {}) == {"experiments", "experiments.configs", "experiments.configs.cifar10",
                               "experiments.train"}
