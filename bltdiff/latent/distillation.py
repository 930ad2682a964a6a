"""Few-step latent MDLM by self-distillation through time (SDTT; Deschenaux &
Gulcehre 2024), over patch slots.

A teacher samples with T equal steps (t = 1 → 0, step 1/T). The student, a
latent MDLM of the same shape that starts from the teacher's weights, learns
to do in one call what the teacher does in k calls, so that it samples with
T/k steps. Rounds of this (bltdiff.training.distill) halve the step count,
each round's student the next round's teacher.

Why this objective. SDTT is the one that fits a latent MDLM unchanged: its
target is the teacher's own denoising distribution, so the student stays an
ordinary time-free MDLM denoiser (same network, same SUBS samplers, same
checkpoint), and the objective needs nothing but the teacher's sampler.
Consistency- or flow-style distillation (DUO, Di[M]O) would change what the
network outputs or need a one-step generator with its own noise input; here
every sampler of the project runs on the student as it is.

The objective, for a batch of byte rows [b, N] cut into slots [b, P, L]:

  1. t on the student's grid: i ~ U{0, .., T/k − 1}, t = 1 − i·k/T      [b]
     z_t: each real slot masked with probability 1 − α(t) (the forward
     process of training; `diffusion.mask_slots`)                         [b, P]
  2. Teacher, k sub-steps of its own sampler from z_t (no gradient): at
     sub-step j (t_j = 1 − (i·k + j)/T → s_j = t_j − 1/T) one network call
     h^(j) = T_θ'(z^(j)) [b, P, D_dec], MDLM's ancestral rule picks the slots
     to reveal (`bltdiff.sampling.rules.ancestral_unmask`, probability
     (α_s − α_t)/(1 − α_t)), D draws their patches (`LatentMDLM.propose`),
     and they are committed. Every slot masked in z_t gets a target
     (h̄_i, x̄_i): the condition and the drawn patch of the sub-step that
     revealed it, or, if it is still masked after k sub-steps, of the last
     one (SDTT's convention: the teacher's latest belief).
  3. Student, one call from z_t: h_i = T_θ(z_t)                           [b, P, D_dec]
  4. Per masked slot, the KL between the two patch distributions,
       KL_i = KL( p_θ'(patch | h̄_i) ‖ p_θ(patch | h_i) )
            = E_{x ~ p_θ'(·|h̄_i)} Σ_positions KL(p_θ'(x_j | h̄_i, x_<j) ‖ p_θ(x_j | h_i, x_<j))
     (chain rule over the decoder's symbols), estimated with the one path
     x̄_i the teacher drew: the per-symbol KLs are exact (whole tables over
     DEC_VOCAB, or first byte / length / other bytes for `parallel`), only
     the path is sampled. Each term is ≥ 0 and 0 where the tables agree.  [b, P]
  5. loss = mean_b Σ_{masked i} KL_i / N        nats per byte (scalar)

The targets of the slots revealed in the window are the teacher's
distribution at the sub-step that revealed them; averaged over the teacher's
trajectories that is the marginal the teacher reaches over k calls, and the
forward KL is minimised, in expectation, exactly by that marginal. With
k = 1 the teacher's one call is the student's own call, so the loss is 0 when
student = teacher.

The teacher's path draws use the train step's float32 Gumbel noise (the
samplers' float64 noise needs x64 at trace time); the KL itself is over whole
distributions, so this only changes which prefix paths are scored.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from bltdiff import vocab
from bltdiff.latent.diffusion import LatentMDLM, mask_slots, patchify
from bltdiff.sampling import rules


class StepPlan(NamedTuple):
  """The teacher's step count T and the sub-steps k one student step replaces."""
  teacher_steps: int
  step_ratio: int

  @property
  def student_steps(self) -> int:
    return self.teacher_steps // self.step_ratio


class TeacherTargets(NamedTuple):
  """Step 2's output, all [b, P, ...] and without gradient."""
  cond: jax.Array  # float [b, P, D_dec]  h̄: the teacher's condition of each slot's target
  tokens: jax.Array  # int32 [b, P, L]   x̄: the patch the teacher drew there (PAD filler)
  lengths: jax.Array  # int32 [b, P]
  revealed: jax.Array  # bool [b, P]      revealed within the k sub-steps


def grid_times(key, batch: int, plan: StepPlan):
  """Step 1: the student-step index i [b] (int32) and t = 1 − i·k/T [b]."""
  i = jax.random.randint(key, (batch,), 0, plan.student_steps, jnp.int32)
  return i, 1.0 - (i * plan.step_ratio).astype(jnp.float32) / plan.teacher_steps


def teacher_targets(model: LatentMDLM, params, key, patch_tokens, slot_mask, masked, i,
                    plan: StepPlan) -> TeacherTargets:
  """Step 2: k sub-steps of the teacher's ancestral sampler from z_t.

  patch_tokens [b, P, L] (the clean patches; masked slots are hidden from
  the network), slot_mask / masked bool [b, P], i int32 [b] (step 1).
  Sub-step j uses fold_in(key, j), split into (select, propose) keys, as the
  fixed-step sampler does at each of its steps."""
  T, k = plan.teacher_steps, plan.step_ratio
  tokens = jnp.where(masked[..., None], vocab.PAD, patch_tokens)
  lengths = jnp.zeros(masked.shape, jnp.int32)  # what z_t knows of masked slots: nothing
  b, p, L = patch_tokens.shape
  d = model.config.dec_dim
  init = (tokens, masked,
          TeacherTargets(jnp.zeros((b, p, d), jnp.float32), jnp.full((b, p, L), vocab.PAD),
                         lengths, jnp.zeros((b, p), bool)))

  def sub_step(carry, j):
    tokens, still, target = carry
    cond = model.denoise(params, tokens, slot_mask & ~still, slot_mask)  # one call [b, P, D_dec]
    t = 1.0 - (i * k + j).astype(jnp.float32)[:, None] / T  # [b, 1]
    s = 1.0 - (i * k + j + 1).astype(jnp.float32)[:, None] / T
    select_key, propose_key = jax.random.split(jax.random.fold_in(key, j))
    reveal = rules.ancestral_unmask(select_key, still, model.schedule, t, s)
    drawn, drawn_len = model.propose(params, propose_key, cond)  # every slot [b, P, L], [b, P]
    # Slots still masked before this sub-step take its condition and draw;
    # those it reveals keep them (no later sub-step writes a visible slot).
    target = TeacherTargets(
        jnp.where(still[..., None], cond.astype(jnp.float32), target.cond),
        jnp.where(still[..., None], drawn, target.tokens),
        jnp.where(still, drawn_len, target.lengths), target.revealed | reveal)
    tokens = jnp.where(reveal[..., None], drawn, tokens)
    return (tokens, still & ~reveal, target), None

  (_, _, target), _ = jax.lax.scan(sub_step, init, jnp.arange(k, dtype=jnp.int32))
  return jax.tree.map(jax.lax.stop_gradient, target)


def symbol_kl(teacher_parts, student_parts):
  """Σ over the decoder's positions of KL(teacher ‖ student) per slot [b, P]:
  parts of (log-probs [b, P, n, V], valid [b, P, n]) from
  `LatentMDLM.symbol_log_probs`. Symbols the teacher gives probability 0
  (forbidden ones) contribute 0."""
  total = 0.0
  for (lp_t, valid), (lp_s, _) in zip(teacher_parts, student_parts):
    p_t = jnp.exp(lp_t)
    per_position = jnp.sum(jnp.where(p_t > 0, p_t * (lp_t - lp_s), 0.0), axis=-1)
    total = total + jnp.sum(jnp.where(valid, per_position, 0.0), axis=-1)
  return total


def distillation_loss(model: LatentMDLM, params, teacher_params, batch, key, plan: StepPlan,
                      train: bool = True):
  """(loss in nats per byte, metrics) of the student `params` against the
  teacher `teacher_params` (steps 1-5 of the module docstring)."""
  tokens = jnp.asarray(batch['tokens'])
  b, n = tokens.shape
  entropies = batch.get('entropies')
  patches, pt = patchify(tokens, None if entropies is None else jnp.asarray(entropies, jnp.float32),
                         model.patch_config)
  t_key, mask_key, teacher_key, dropout_key = jax.random.split(key, 4)
  i, t = grid_times(t_key, b, plan)  # 1. [b]
  masked = mask_slots(mask_key, patches.slot_mask, model.schedule.alpha(t))  # [b, P]
  target = teacher_targets(model, teacher_params, teacher_key, pt, patches.slot_mask, masked,
                           i, plan)  # 2.
  student_cond = model.denoise(params, pt, patches.slot_mask & ~masked, patches.slot_mask,
                               dropout_key if train and model.config.dropout else None)  # 3.
  kl = symbol_kl(  # 4. [b, P]
      model.symbol_log_probs(teacher_params, target.cond, target.tokens, target.lengths),
      model.symbol_log_probs(params, student_cond, target.tokens, target.lengths))
  kl = jnp.where(masked, kl, 0.0)
  loss = jnp.mean(jnp.sum(kl, axis=-1)) / n  # 5.
  revealed = masked & target.revealed
  count = lambda m: jnp.maximum(jnp.sum(m), 1)
  return loss, {
      'loss': loss,
      'kl_per_slot': jnp.sum(kl) / count(masked),
      'kl_revealed_per_slot': jnp.sum(jnp.where(revealed, kl, 0.0)) / count(revealed),
      'revealed_fraction': jnp.sum(revealed) / count(masked),
  }
