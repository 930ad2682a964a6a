"""Device mesh and logical-axis rules (MaxText style).

Parameters and activations name their axes logically (see `bltdiff.layers`);
LOGICAL_RULES maps those names onto the mesh axes ('data', 'fsdp', 'tensor').
The same code then runs on one CPU, on fake CPU devices in tests, and on pods:
only the mesh shape in the config changes.
"""

import contextlib

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ('data', 'fsdp', 'tensor')

LOGICAL_RULES = (
    # activations
    ('act_batch', ('data', 'fsdp')),
    ('act_length', None),
    ('act_embed', None),
    ('act_heads', 'tensor'),
    ('act_mlp', 'tensor'),
    # parameters: fsdp shards the embedding dimension, tensor the wide ones
    ('vocab', 'tensor'),
    ('embed', 'fsdp'),
    ('heads', 'tensor'),
    ('kv', None),
    ('mlp', 'tensor'),
)


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes; one entry of -1 takes the remaining devices."""
  sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError('mesh: at most one of mesh.data/fsdp/tensor may be -1')
  fixed = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % fixed:
      raise ValueError(f'mesh: {num_devices} devices are not divisible by the fixed axes ({fixed})')
    sizes[sizes.index(-1)] = num_devices // fixed
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f'mesh: data*fsdp*tensor = {int(np.prod(sizes))} but there are '
                     f'{num_devices} devices')
  return tuple(sizes)


def make_mesh(mesh_config, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_config, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


@contextlib.contextmanager
def activate(mesh: Mesh):
  """Mesh and logical rules in force, for tracing code that constrains activations."""
  with mesh, nn.logical_axis_rules(LOGICAL_RULES):
    yield


def logical_shardings(boxed_tree, mesh: Mesh):
  """NamedShardings for a pytree whose leaves may be nn.Partitioned boxes (abstract ok).

  A dimension that the mapped mesh axes do not divide evenly (e.g. the 257-symbol
  vocabulary over tensor=2) stays whole on that dimension instead of failing."""
  specs = nn.get_partition_spec(boxed_tree)
  mesh_specs = nn.logical_to_mesh(specs, LOGICAL_RULES)
  shapes = jax.tree.map(lambda x: getattr(x, 'shape', None), nn.unbox(boxed_tree))
  is_spec = lambda x: isinstance(x, PartitionSpec)
  fitted = jax.tree.map(lambda spec, shape: fit_spec(spec, shape, mesh), mesh_specs, shapes,
                        is_leaf=is_spec)
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec), fitted, is_leaf=is_spec)


def fit_spec(spec: PartitionSpec, shape, mesh: Mesh) -> PartitionSpec:
  """spec with the mesh axes of each dimension they do not divide dropped."""
  if shape is None:
    return spec
  out = []
  for dim, axes in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      out.append(None)
      continue
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    size = int(np.prod([mesh.shape[a] for a in names]))
    out.append(axes if shape[dim] % size == 0 else None)
  return PartitionSpec(*out)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches split their leading axis over data and fsdp."""
  return NamedSharding(mesh, PartitionSpec(('data', 'fsdp')))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Process-local numpy batch -> global jax.Arrays sharded over the batch axis.

  Each process passes its own rows; on one process that is the whole batch."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}
