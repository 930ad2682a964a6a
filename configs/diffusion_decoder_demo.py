"""The demo with the `diffusion` local decoder (issue 16): each patch's bytes
from a small masked-diffusion model over the patch, in T_steps(p) =
min(L, max(⌈α·Ĥ(p)⌉, T_min)) intra-patch passes.

  python -m bltdiff.main --config=configs/diffusion_decoder_demo.py --workdir=runs/ddemo
  python -m bltdiff.main --config=configs/diffusion_decoder_demo.py --workdir=runs/ddemo \\
      --mode=sample --sampler=cached --adaptive_alpha=0.5 --min_steps=1

The recipe is bench/likelihood.py's DIFFUSION_RECIPE: a reveal order nearly left
to right (β = 8), two-stream training, Ĥ(p) from the entropy head, each token
embedding the symbol before it (README, "The `diffusion` local decoder", for
its bound and samples against the `ar` decoder's). Reuse the demo's entropy model with
--config.patching.entropy_model=runs/demo/entropy_model.
"""

from configs import demo


def get_config():
  config = demo.get_config()
  config.model.update(decoder_mode='diffusion', dec_order_bias=8.0, dec_two_stream=True,
                      dec_entropy_head=True, dec_previous_symbol=True)
  return config
