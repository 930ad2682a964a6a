"""Latent MDLM: masked diffusion over BLT patches.

  local_encoder  a visible patch's bytes -> one vector (E)
  local_decoder  a slot's latent -> a distribution over whole patches (D)
  network        E, the latent transformer T, D and the learned p(S): one Flax module
  diffusion      the forward process over slots, the bound, encode/decode (LatentMDLM)
  sampling       the sampler adapter over patch slots, prompts and infilling
"""
