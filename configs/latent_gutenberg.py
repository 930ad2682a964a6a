"""Latent MDLM on the development corpus (public-domain books). The data path
is yours to give; from the repository root, with the corpus beside it:

  python -m bltdiff.main --config=configs/latent_gutenberg.py \
      --config.data.paths='../shared/data/gutenberg/*.txt' --workdir=runs/latent_gutenberg

The chain trains its own entropy model (WORKDIR/entropy_model), prepares shards
with entropies, calibrates the threshold to 4.5 bytes per patch and trains the
latent MDLM. Reuse a trained entropy model (e.g. configs/entropy_gutenberg.py's
run) with --config.patching.entropy_model=runs/entropy_gutenberg. About an
hour on 2 CPU cores at this size; bench/likelihood.py runs shorter versions.
"""

import importlib.util
import os

# Config files are loaded by path, not as a package: load the demo beside this one.
_spec = importlib.util.spec_from_file_location(
    'latent_demo', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'latent_demo.py'))
latent_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(latent_demo)


def get_config():
  c = latent_demo.get_config()
  with c.unlocked():
    c.data.source = 'text'
    c.data.paths = ''  # --config.data.paths=GLOB (required)
    c.data.builtin_max_bytes = 0
    c.data.seq_len = 512
    c.patching.num_slots = 160  # 512 / 4.5 ≈ 114 patches, with room for hard text
    c.entropy_model = latent_demo.entropy_model_config(c.data.to_dict())
    c.entropy_model.model.update(dim=128, num_layers=3, num_heads=4, mlp_dim=512)
    c.entropy_model.data.seq_len = 256
    c.entropy_model.train.num_steps = 1000
    c.model.update(dim=192, num_layers=6, num_heads=6, mlp_dim=576)
    c.train.update(batch_size=16, num_steps=3000, learning_rate=1.5e-3, warmup_steps=150,
                   eval_every=500, eval_batches=16, eval_t_samples=4, sample_every=1000,
                   checkpoint_every=500)
    c.sample.steps = 128
  return c
