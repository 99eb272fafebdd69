import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_ensembles import models
from resnet_ensembles.models.layout import cifar_layout, forward_macs
from tests.reference import reference_forward


def _init(model, seed=0, perturb_stats=True):
  v = models.init_variables(model, jax.random.PRNGKey(seed))
  if perturb_stats:  # non-trivial BatchNorm statistics, so stored-statistics bugs cannot hide
    key = [jax.random.PRNGKey(seed + 1)]

    def perturb(path, leaf):
      key[0], k = jax.random.split(key[0])
      noise = jax.random.normal(k, leaf.shape)
      return leaf * jnp.exp(0.2 * noise) if path[-1].key == "var" else leaf + 0.1 * noise
    v = {"params": v["params"], "batch_stats": jax.tree_util.tree_map_with_path(perturb, v["batch_stats"])}
  return v


X = jax.random.normal(jax.random.PRNGKey(7), (3, 32, 32, 3))


@pytest.mark.parametrize("depth,count", [(20, 269_722), (32, 464_154), (56, 853_018), (110, 1_727_962)])
def test_pinned_parameter_counts(depth, count):
  for cls in (models.CifarResNet, models.PlainNet):
    shapes = jax.eval_shape(lambda: cls(depth).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    assert models.num_params(shapes["params"]) == count


def test_layout_of_resnet110():
  lay = cifar_layout(110)
  assert lay.num_blocks == 54
  assert lay.stage_openers == (0, 18, 36)  # the paper's blocks 1, 19, 37
  assert lay.downsampling_blocks == (18, 36)
  assert lay.stage_of_block[17] == 0 and lay.stage_of_block[18] == 1 and lay.stage_of_block[53] == 2
  assert len(lay.deletable_blocks) == 51
  assert abs(forward_macs(20) / 41e6 - 1) < 0.02 and abs(forward_macs(110) / 253e6 - 1) < 0.02


@pytest.mark.parametrize("depth", [7, 21, 0])
def test_bad_depth_is_clear(depth):
  with pytest.raises(ValueError, match="6n\\+2"):
    models.CifarResNet(depth).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize("variant", ["preact", "original"])
@pytest.mark.parametrize("cls", [models.CifarResNet, models.PlainNet])
def test_masks_match_hand_built_network(cls, variant):
  model = cls(14, variant)  # 6 blocks: 2 per stage
  v = _init(model)
  full = model.apply(v, X)
  np.testing.assert_allclose(full, reference_forward(model, v, X), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(model.apply(v, X, block_mask=jnp.ones(6)), full)
  np.testing.assert_array_equal(model.apply(v, X, block_mask=np.ones(6, bool)), full)
  for i in range(6):  # each deletion, stage openers (0, 2, 4) included
    mask = np.ones(6, np.float32)
    mask[i] = 0
    np.testing.assert_allclose(model.apply(v, X, block_mask=mask), reference_forward(model, v, X, deleted=(i,)),
                               rtol=1e-5, atol=1e-5)
  assert not np.allclose(model.apply(v, X, block_mask=np.eye(6)[1] < 1), full)


def test_vmap_over_masks_equals_loop():
  model = models.CifarResNet(14)
  v = _init(model)
  masks = (jax.random.uniform(jax.random.PRNGKey(3), (5, 6)) > 0.5).astype(jnp.float32)
  batched = jax.jit(jax.vmap(lambda m: model.apply(v, X, block_mask=m)))(masks)
  for m, out in zip(masks, batched):
    np.testing.assert_allclose(out, model.apply(v, X, block_mask=m), rtol=1e-5, atol=1e-5)


def test_orders():
  model = models.CifarResNet(20)  # 3 blocks per stage: 1,2 and 4,5 and 7,8 can move
  v = _init(model)
  full = model.apply(v, X)
  np.testing.assert_array_equal(model.apply(v, X, block_order=np.arange(9)), full)
  order = np.arange(9)
  order[[4, 5]] = [5, 4]
  swapped = model.apply(v, X, block_order=order)
  assert not np.allclose(swapped, full)
  # Same as swapping the two blocks' parameters and statistics.
  v2 = jax.tree.map(lambda a: a, v)
  for c in ("params", "batch_stats"):
    v2[c] = dict(v[c])
    v2[c]["block_04"], v2[c]["block_05"] = v[c]["block_05"], v[c]["block_04"]
  np.testing.assert_allclose(swapped, model.apply(v2, X), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(swapped, reference_forward(model, v, X, order=order), rtol=1e-5, atol=1e-5)
  orders = np.stack([np.arange(9), order])
  batched = jax.jit(jax.vmap(lambda o: model.apply(v, X, block_order=o)))(orders)
  np.testing.assert_allclose(batched[1], swapped, rtol=1e-5, atol=1e-5)


def test_bad_masks_and_orders_are_clear():
  model = models.CifarResNet(20)
  v = _init(model)
  with pytest.raises(ValueError, match="block_mask must have shape \\(9,\\)"):
    model.apply(v, X, block_mask=np.ones(8))
  crossing = np.arange(9)
  crossing[[2, 4]] = [4, 2]
  with pytest.raises(ValueError, match="within stages"):
    model.apply(v, X, block_order=crossing)
  opener = np.arange(9)
  opener[[3, 4]] = [4, 3]
  with pytest.raises(ValueError, match="stage opener"):
    model.apply(v, X, block_order=opener)
  with pytest.raises(ValueError, match="permutation"):
    model.apply(v, X, block_order=np.zeros(9, int))


def test_grad_route_keeps_forward_values():
  model = models.CifarResNet(14)
  v = _init(model)
  route = np.array([1, 0, 0, 1, 1, 0], np.float32)
  np.testing.assert_array_equal(model.apply(v, X, grad_route=route), model.apply(v, X))
  with pytest.raises(ValueError, match="plain net"):
    pv = _init(models.PlainNet(14))
    models.PlainNet(14).apply(pv, X, grad_route=route)


def test_variable_names_are_stable():
  """Checkpoints of long runs depend on these names; renaming them breaks every trained network."""
  v = jax.eval_shape(lambda: models.CifarResNet(8).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  assert sorted(v["params"]) == ["block_00", "block_01", "block_02", "head", "head_bn", "stem_conv"]
  assert sorted(v["params"]["block_01"]) == ["bn1", "bn2", "conv1", "conv2"]
  v = jax.eval_shape(lambda: models.CifarResNet(8, "original").init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  assert sorted(v["batch_stats"]) == ["block_00", "block_01", "block_02", "stem_bn"]


def test_block_methods_compose_to_the_network():
  model = models.CifarResNet(14)
  v = _init(model)
  h = model.apply(v, X, method=model.embed)
  for pos in range(6):
    h = model.apply(v, h, pos, method=model.block)
  np.testing.assert_array_equal(model.apply(v, h, method=model.readout), model.apply(v, X))


def test_init_variables_is_model_init_compiled_once():
  model = models.CifarResNet(8)
  optimised = jax.jit(model.init)(jax.random.PRNGKey(5), jnp.zeros((1, 32, 32, 3)))  # eager: ~25 s here
  compiled = models.init_variables(model, jax.random.PRNGKey(5))  # unoptimised on the CPU
  assert jax.tree.structure(compiled) == jax.tree.structure(optimised)
  for a, b in zip(jax.tree.leaves(compiled), jax.tree.leaves(optimised)):  # the same draws, to float rounding
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  other = models.init_variables(model, jax.random.PRNGKey(6))
  assert not np.allclose(other["params"]["block_00"]["conv1"]["kernel"], compiled["params"]["block_00"]["conv1"]["kernel"])


def test_conv_chunk_computes_the_same_network_and_resumes_across_it(tmp_path):
  """Convolutions in chunks of images (an uneven last chunk included) give the intact network's outputs, its
  training-mode BatchNorm statistics over the whole batch, and its gradients; a checkpoint written without
  chunks is the same network to the Checkpointer (models.EXECUTION_FIELDS)."""
  import ml_collections
  from resnet_ensembles.store import checkpoints
  whole, chunked = models.CifarResNet(8), models.CifarResNet(8, conv_chunk=2)
  v = _init(whole)
  x = jax.random.normal(jax.random.PRNGKey(3), (5, 8, 8, 3))  # chunks of 2, 2 and 1
  np.testing.assert_allclose(chunked.apply(v, x), whole.apply(v, x), rtol=1e-5, atol=1e-5)

  def loss(params, model):
    out, upd = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                           mutable=["batch_stats"])
    return jnp.sum(out ** 2), upd
  grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (l0, s0), g0 = grad(v["params"], whole)
  (l1, s1), g1 = grad(v["params"], chunked)
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  for a, b in zip(jax.tree.leaves((g1, s1)), jax.tree.leaves((g0, s0))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  # the chunks are real: in training each branch convolution runs 3 times (the stem once); inference is whole
  count = lambda model, train: str(jax.make_jaxpr(lambda p: model.apply(
      {"params": p, "batch_stats": v["batch_stats"]}, x, train=train, mutable=["batch_stats"]))(
          v["params"])).count("conv_general_dilated")
  assert count(chunked, True) == 3 * count(whole, True) - 2 and count(chunked, False) == count(whole, False)
  config = ml_collections.ConfigDict({"model": {"name": "resnet", "depth": 8, "conv_chunk": 0}})
  checkpoints.Checkpointer(str(tmp_path), config)
  config.model.conv_chunk = 16
  checkpoints.Checkpointer(str(tmp_path), config)  # the same network: no error
  config.model.depth = 14
  with pytest.raises(ValueError, match="holds a run of model"):
    checkpoints.Checkpointer(str(tmp_path), config)
