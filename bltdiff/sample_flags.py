"""Flags of the sampling command (--mode=sample).

The sampler options' flags are generated from `SamplerOptions` (one per
field, same name, its help text; default None = config.sample decides), so a
new option is a new flag without touching this file. Defined apart from the
command so that `bltdiff.main` parses them without importing the samplers.
"""

import dataclasses

from absl import flags

from bltdiff.sampling.options import SamplerOptions

_DEFINE = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string,
           bool: flags.DEFINE_bool}
OPTION_FLAGS = {
    f.name: _DEFINE[type(f.default)](f.name, None, f.metadata['help'] + ' Default: config.sample.')
    for f in dataclasses.fields(SamplerOptions)}

NUM_SAMPLES = flags.DEFINE_integer('num_samples', None, 'Number of samples '
                                   '(default: config.sample.num_samples).')
LENGTH = flags.DEFINE_integer('length', None, 'Bytes per sample (default: data.seq_len).')
PROMPT = flags.DEFINE_string('prompt', None, 'Text the samples start with.')
PROMPT_FILE = flags.DEFINE_string('prompt_file', None, 'File whose bytes the samples start with.')
OUTPUT = flags.DEFINE_string('output', None, 'Output path prefix (default: WORKDIR/samples/sample).')
SUFFIX = flags.DEFINE_string('suffix', None, 'Infilling: text that follows the generated gap.')
SUFFIX_FILE = flags.DEFINE_string('suffix_file', None, 'Infilling: file whose bytes follow the gap.')
GAP = flags.DEFINE_integer('gap', None, 'Infilling: bytes to generate between prompt and suffix.')
TOTAL_LENGTH = flags.DEFINE_integer('total_length', None, 'Bytes per sample beyond the context: '
                                    'generated in semi-autoregressive blocks.')
SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')


def option_overrides() -> dict:
  """The sampler options given on the command line (None = not given)."""
  return {name: flag.value for name, flag in OPTION_FLAGS.items()}
