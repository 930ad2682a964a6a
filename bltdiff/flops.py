"""FLOPs of one call of a JAX function, counted analytically from its jaxpr.

Why not XLA's `compiled.cost_analysis()`: it counts the body of a `scan`,
`fori_loop` or `while_loop` once, however many times it runs (so a sampler that
scans its decoder over L+1 positions reads ~(L+1)x too cheap), and on GPU it
counts 0 for custom calls such as cuDNN attention. `count` walks the jaxpr of
`fn` instead, so the figure depends on the program alone, not on the machine.

Conventions:
  * A multiply-add is 2 FLOPs: dot_general costs 2 * |out| * prod(contracting
    dims), i.e. 2 * batch * lhs_free * rhs_free * contracting.
  * Elementwise ops cost 1 per output element, whatever the dtype and however
    dear (exp = add = compare = select); reductions cost 1 per input element;
    data movement, type conversion, random bits and collectives cost 0. XLA's
    cost analysis counts elementwise ops alike but leaves transcendentals out
    of 'flops', so on matmul-heavy code the two agree to a few per cent.
  * Loops multiply: scan -> length * body; while -> n * body + (n + 1) * cond,
    n supplied by the caller (the trip count is data). Nesting multiplies.
  * cond / switch -> the dearest branch (`cond_policy='max'`, an upper bound;
    'min' or 'sum' on request). Every branch is walked all the same.
  * Attention: `jax.nn.dot_product_attention` traces to two dot_generals plus a
    softmax. A fused cuDNN primitive, if one is in the jaxpr, counts as the
    matmuls the XLA path would run: dense (a causal mask saves nothing), 2 x
    that for the backward pass (four matmuls, no recomputation).
  * Sharding: `count` is the global FLOPs of the logical (unpartitioned)
    computation; a shard_map body counts once per device of its manual axes.
    FLOPs per device = count / the number of devices the work is split over
    (work replicated on several devices is done, and counted, once per device
    only inside shard_map).

Trace under the same `jax.enable_x64` setting the code runs with: some code
(e.g. `sampling.categorical.gumbel_argmax`) branches on it, though dtypes never change a count.
"""

import functools
import itertools
import math
import warnings

import jax
import jax.extend as jex

# How each primitive is costed (names as `jax.make_jaxpr` prints them):
#   elementwise: 1 FLOP per output element.
#   reduction:   1 FLOP per element of the (first) input.
#   combine:     scatter that combines (add, mul, min, max): 1 per update element.
#   free:        0 FLOPs: moves, reshapes, converts, RNG bits, collectives.
#   call:        no cost of its own; the sub-jaxpr(s) are counted once.
# Costed by their own rule in `_Counter.eqn`: dot_general, conv_general_dilated, fused attention,
# sort (n * ceil(log2 len) compares), top_k (n * ceil(log2 k)), scan, while,
# cond, shard_map. Anything else counts 0 with a warning, or raises if it
# carries sub-jaxprs (a loop we would not know how many times to count).
COST_CLASSES = {
    'elementwise': """abs acos acosh add add_any asin asinh atan atan2 atanh cbrt ceil clamp
        complex conj cos cosh digamma div erf erf_inv erfc exp exp2 expm1 floor igamma igammac
        imag integer_pow is_finite lgamma log log1p logistic max min mul neg nextafter pow real
        reduce_precision rem round rsqrt sign sin sinh sqrt square sub tan tanh
        eq ne lt le gt ge and or not xor select_n shift_left shift_right_logical
        shift_right_arithmetic population_count clz""",
    'reduction': """reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or reduce_xor
        reduce argmax argmin cumsum cumprod cummax cummin cumlogsumexp""",
    'combine': 'scatter-add scatter_add scatter-mul scatter_mul scatter-min scatter_min '
               'scatter-max scatter_max',
    'free': """reshape broadcast_in_dim transpose squeeze expand_dims rev slice dynamic_slice
        dynamic_update_slice gather scatter concatenate pad split tile convert_element_type
        bitcast_convert_type iota copy copy_p stop_gradient sharding_constraint mesh_cast
        reshard device_put optimization_barrier random_bits random_seed random_wrap
        random_unwrap random_fold_in random_split threefry2x32 psum psum_invariant pmax pmin
        pvary pbroadcast all_gather all_to_all ppermute reduce_scatter axis_index""",
    'call': """jit pjit closed_call core_call remat2 checkpoint custom_jvp_call
        custom_vjp_call custom_vjp_call_jaxpr""",
}
_CLASS_OF = {name: cls for cls, names in COST_CLASSES.items() for name in names.split()}
_COND_POLICIES = {'max': max, 'min': min, 'sum': sum}


def _size(var) -> int:
  return math.prod(getattr(var.aval, 'shape', ()))


def _attention_flops(eqn) -> int:
  """Fused attention (cuDNN's dot_product_attention_{fwd,bwd}[_wrapper]).

  query [B, T, N, Hq] (layout 0, BTNH) or [B, N, T, Hq] (layout 1, BNTH), value
  [B, S, K, Hv] or [B, K, S, Hv]: QK^T and PV cost 2*B*N*T*S*(Hq + Hv)."""
  query, value = eqn.invars[0].aval, eqn.invars[2].aval
  kv_len = value.shape[2] if eqn.params['layout'] == 1 else value.shape[1]
  rows = math.prod(query.shape[:-1])  # B * N * T
  forward = 2 * rows * kv_len * (query.shape[-1] + value.shape[-1])
  return 2 * forward if 'bwd' in eqn.primitive.name else forward


class _Counter:
  """Walks jaxprs depth-first, handing out while-loop trip counts in that order."""

  def __init__(self, while_trips, cond_policy):
    if cond_policy not in _COND_POLICIES:
      raise ValueError(f'cond_policy must be one of {sorted(_COND_POLICIES)}, not {cond_policy!r}')
    self.combine_branches = _COND_POLICIES[cond_policy]
    self.while_trips = while_trips
    self.per_loop = hasattr(while_trips, '__iter__')
    self.trips = (iter(while_trips) if self.per_loop else
                  None if while_trips is None else itertools.repeat(int(while_trips)))

  def jaxpr(self, jaxpr) -> int:
    return sum(self.eqn(eqn) for eqn in jaxpr.eqns)

  def next_trips(self) -> int:
    trips = None if self.trips is None else next(self.trips, None)
    if trips is None:
      raise ValueError(
          'count() met a while_loop, whose trip count is data: pass while_trips=n (every '
          'while loop runs n times) or a sequence with one count per while loop in '
          f'depth-first order of the jaxpr (got while_trips={self.while_trips!r}).')
    return trips

  def eqn(self, eqn) -> int:
    name, params = eqn.primitive.name, eqn.params
    cls = _CLASS_OF.get(name)
    if cls == 'elementwise':
      return _size(eqn.outvars[0])
    if cls == 'reduction':
      return _size(eqn.invars[0])
    if cls == 'combine':
      return _size(eqn.invars[-1])
    if cls == 'free':
      return 0
    if cls == 'call':
      return sum(self.jaxpr(sub) for sub in jex.core.jaxprs_in_params(params))
    if name == 'dot_general':
      (contracting, _), _ = params['dimension_numbers']
      lhs_shape = eqn.invars[0].aval.shape
      return 2 * _size(eqn.outvars[0]) * math.prod(lhs_shape[d] for d in contracting)
    if name == 'conv_general_dilated':
      # Each output element sums the kernel's in-features (C_in / groups) x its window.
      rhs_shape = eqn.invars[1].aval.shape
      window = math.prod(rhs_shape[d] for d in params['dimension_numbers'].rhs_spec[1:])
      return 2 * _size(eqn.outvars[0]) * window
    if name.startswith('dot_product_attention'):
      return _attention_flops(eqn)
    if name == 'sort':
      length = eqn.invars[0].aval.shape[params['dimension']]
      return _size(eqn.invars[0]) * math.ceil(math.log2(max(length, 2)))
    if name == 'top_k':
      return _size(eqn.invars[0]) * math.ceil(math.log2(max(params['k'], 2)))
    if name == 'scan':
      return params['length'] * self.jaxpr(params['jaxpr'].jaxpr)
    if name == 'while':
      trips = self.next_trips()
      return (trips * self.jaxpr(params['body_jaxpr'].jaxpr)
              + (trips + 1) * self.jaxpr(params['cond_jaxpr'].jaxpr))
    if name == 'cond':
      return self.combine_branches([self.jaxpr(b.jaxpr) for b in params['branches']])
    if name == 'shard_map':
      mesh = params['mesh']
      axes = params.get('newly_manual_axes', mesh.axis_names)
      return math.prod(mesh.shape[a] for a in axes) * self.jaxpr(params['jaxpr'])
    if any(True for _ in jex.core.jaxprs_in_params(params)):
      raise NotImplementedError(
          f'count() does not know how often the sub-jaxprs of {name!r} run; '
          'classify it in bltdiff.flops.COST_CLASSES or _Counter.eqn.')
    warnings.warn(f'bltdiff.flops: primitive {name!r} is not classified; counted as 0 FLOPs.')
    return 0


def count(fn, *args, while_trips=None, cond_policy: str = 'max', **kwargs) -> float:
  """FLOPs of one call fn(*args, **kwargs), from its jaxpr (see the module docstring).

  Args:
    fn: any traceable function (jitted or not); args may be pytrees (e.g. flax
      params) of arrays or `jax.ShapeDtypeStruct`s, so nothing need be allocated.
    *args: traced arguments.
    while_trips: trip count of data-dependent while loops: an int for every
      loop, or a sequence with one per loop in depth-first order of the jaxpr
      (a loop nested in a scan is one entry, multiplied by the scan length).
      Required if the jaxpr has a while loop.
    cond_policy: 'max' (default, an upper bound), 'min' or 'sum' over the
      branches of each cond / switch.
    **kwargs: static keyword arguments, closed over (not traced).

  Returns:
    The global (unpartitioned) FLOPs of one call, as a float.
  """
  closed = jax.make_jaxpr(functools.partial(fn, **kwargs))(*args)
  counter = _Counter(while_trips, cond_policy)
  flops = counter.jaxpr(closed.jaxpr)
  if counter.per_loop and next(counter.trips, None) is not None:
    raise ValueError(f'while_trips={while_trips!r} has more counts than the jaxpr has '
                     'while loops.')
  return float(flops)
