"""Samplers of absorbing-state (masked) diffusion, shared by byte MDLM and latent MDLM.

  categorical  float64 Gumbel draws and nucleus (top-p) filtering
  options      SamplerOptions: every sampler option with its default (flags come from it)
  rules        which masked units a step reveals (MDLM ancestral, entropy budget, confidence)
  loops        the two loops: fixed steps (lax.scan) and data-dependent (lax.while_loop)
  registry     Adapter (what a model supplies) and SAMPLERS (name -> function)
"""
