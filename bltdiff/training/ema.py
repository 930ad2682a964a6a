"""The exponential moving average (EMA) of the parameters, which eval, samples
and the export use when a run keeps one (MD4, Shi et al. 2024, samples from an
EMA with rate 0.9999).

  ema_0 = params_0        ema_s = r · ema_{s−1} + (1 − r) · params_s

after every train step s, with r = train.ema_rate; computed as
ema + (1 − r)(params − ema) (MD4's form: equal, and exact where params = ema).
r = 0 turns it off: the train state then holds None (no memory, no work) and
inference uses the parameters themselves. The EMA lives in the train state in
fp32 like the master weights, laid out (sharded) like them, and is saved in
every checkpoint with them.

Under gradient accumulation (train.grad_accum_steps = k) it is updated every
micro-step, so its horizon is 1 / (1 − r) micro-steps = 1 / (k(1 − r)) updates.
"""

import jax
import jax.numpy as jnp


def init(params, rate: float):
  """The EMA at step 0: a copy of the parameters, or None when rate is 0."""
  return None if rate == 0 else jax.tree.map(jnp.copy, params)


def update(ema_params, params, rate: float):
  """One step of the average: params are the parameters after the step."""
  if ema_params is None:
    return None
  return jax.tree.map(lambda e, p: e + (1.0 - rate) * (p - e), ema_params, params)


def inference_params(train_state):
  """What eval, samples and the export use: the EMA when the run keeps one."""
  return train_state.params if train_state.ema_params is None else train_state.ema_params
