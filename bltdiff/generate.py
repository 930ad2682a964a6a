"""The sampling command: --mode=sample.

  python -m bltdiff.main --config=configs/demo.py --workdir=runs/demo --mode=sample \
      [--sampler=cached|ancestral|adaptive|confidence] [--steps=128] [--num_samples=4] \
      [--prompt="def " | --prompt_file=F] [--suffix="return x" | --suffix_file=F] [--gap=64] \
      [--total_length=1024] [--output=samples] [--top_p=0.9] [--seed=0]
  python -m bltdiff.main --mode=sample --checkpoint=EXPORT_DIR [the same flags]

The model comes from the latest checkpoint of the training run in --workdir,
or from an export (--checkpoint, written by --mode=export; see
bltdiff/training/export.py), which needs neither --config nor the run.
A `diffusion` decoder run decodes each patch in T_steps(p) = min(L,
max(⌈α·Ĥ(p)⌉, T_min)) intra-patch steps: with the cached or ancestral sampler,
--adaptive_alpha=α --min_steps=T_min set them (the proposal's names); with
adaptive or confidence those are the latent sampler's own, and
--intra_alpha / --intra_min_steps (which always win) set the patch rule.
--intra_speculative (two-stream decoders) makes each pass check left-to-right
drafts instead: the exact left-to-right chain in fewer passes than bytes.
Prompting, infilling and --total_length: see bltdiff/sample_request.py (the
Python API `bltdiff.load(DIR).sample(...)` takes the same requests).

Writes OUTPUT.npy (the tokens, lossless: bytes and document boundaries),
OUTPUT.bin (the samples' raw bytes, concatenated, boundaries dropped) and
OUTPUT.txt (readable; invalid UTF-8 shown replaced), and prints the number of
network calls, the wall time and bytes/s of the run.
"""

import time

import jax
import numpy as np
from etils import epath
from bltdiff import sample_request, text
from bltdiff.errors import BltdiffError, ConfigError
from bltdiff.sample_flags import (GAP, LENGTH, NUM_SAMPLES, OUTPUT, PROMPT, PROMPT_FILE, SEED,
                                  SUFFIX, SUFFIX_FILE, TOTAL_LENGTH, option_overrides)
from bltdiff.sampling.options import SamplerOptions
from bltdiff.training import checkpointing, export, restore


def read_prompt(prompt: str | None, prompt_file: str | None, name: str = 'prompt') -> bytes | None:
  """The raw bytes of --{name} or --{name}_file, or None; empty means none.

  Text given on the command line is encoded as UTF-8 (undecodable bytes that
  the shell passed through are kept as they were)."""
  if prompt is not None and prompt_file is not None:
    raise ConfigError(f'--{name} and --{name}_file: give at most one')
  if prompt_file is not None:
    if not epath.Path(prompt_file).exists() or epath.Path(prompt_file).is_dir():
      raise BltdiffError(f'--{name}_file: {prompt_file} does not exist')
    data = epath.Path(prompt_file).read_bytes()
  elif prompt is not None:
    data = prompt.encode('utf-8', errors='surrogateescape')
  else:
    return None
  return data or None


def run_sample_command(workdir: str | None, checkpoint: str | None = None):
  """Samples from the latest checkpoint of the run in workdir, or from the
  export in checkpoint: the architecture comes from the model, the sampler
  options from the flags over its config.sample. Returns (tokens, stats)."""
  def checked_request(config):
    options = SamplerOptions.from_config(config.sample, option_overrides(),
                                         config.model.get('decoder_mode'))
    return sample_request.make_request(
        config, options, num_samples=NUM_SAMPLES.value, length=LENGTH.value,
        prompt=read_prompt(PROMPT.value, PROMPT_FILE.value),
        suffix=read_prompt(SUFFIX.value, SUFFIX_FILE.value, name='suffix'), gap=GAP.value,
        total_length=TOTAL_LENGTH.value)

  if checkpoint is not None:
    loaded = export.load_export(checkpoint)
  else:
    checked_request(checkpointing.load_config(workdir))  # bad flags fail before any restore
    loaded = restore.load_for_inference(workdir)
  config, model, params, step = loaded.config, loaded.model, loaded.params, loaded.step
  request = checked_request(config)
  options = request.options
  key = jax.random.PRNGKey(SEED.value)
  sample_request.draw(model, params, request, jax.random.fold_in(key, 1))  # compiles
  start = time.perf_counter()
  tokens, stats = sample_request.draw(model, params, request, key)
  wall = time.perf_counter() - start

  # Local or gs:// (etils.epath), like every file of a run.
  default_dir = epath.Path(workdir) / 'samples' if checkpoint is None else epath.Path('samples')
  out = str(OUTPUT.value or default_dir / 'sample')
  epath.Path(out).parent.mkdir(parents=True, exist_ok=True)
  with epath.Path(out + '.npy').open('wb') as f:
    np.save(f, tokens.astype(np.int16))
  epath.Path(out + '.bin').write_bytes(b''.join(text.to_bytes(row) for row in tokens))
  epath.Path(out + '.txt').write_text(text.render_samples(tokens))
  generated = sample_request.generated_bytes(tokens, request)
  print(text.render_samples(tokens))
  print(f'checkpoint step {step} | sampler {options.sampler} | steps {stats["steps"]} | '
        f'network calls {stats["latent_calls"]} | wall {wall:.3f}s | '
        f'{generated / wall:.1f} bytes/s | written to {out}.{{txt,bin,npy}}')
  return tokens, stats
