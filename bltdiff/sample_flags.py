"""Flags of the sampling command (--mode=sample), defined apart from the sampler
so that `bltdiff.main` parses them without importing JAX, orbax or grain."""

from absl import flags

SAMPLER = flags.DEFINE_string('sampler', None, 'Sampler (default: config.sample.sampler).')
STEPS = flags.DEFINE_integer('steps', None, 'Denoising steps (default: config.sample.steps).')
NUM_SAMPLES = flags.DEFINE_integer('num_samples', None, 'Number of samples.')
LENGTH = flags.DEFINE_integer('length', None, 'Bytes per sample (default: data.seq_len).')
PROMPT = flags.DEFINE_string('prompt', None, 'Text the samples start with.')
PROMPT_FILE = flags.DEFINE_string('prompt_file', None, 'File whose bytes the samples start with.')
OUTPUT = flags.DEFINE_string('output', None, 'Output path prefix (default: WORKDIR/samples/sample).')
SUFFIX = flags.DEFINE_string('suffix', None, 'Infilling: text that follows the generated gap.')
SUFFIX_FILE = flags.DEFINE_string('suffix_file', None, 'Infilling: file whose bytes follow the gap.')
GAP = flags.DEFINE_integer('gap', None, 'Infilling: bytes to generate between prompt and suffix.')
TOTAL_LENGTH = flags.DEFINE_integer('total_length', None, 'Bytes per sample beyond the context: '
                                     'generated in semi-autoregressive blocks.')
ADAPTIVE_ALPHA = flags.DEFINE_float('adaptive_alpha', None, 'adaptive: steps per nat of entropy.')
MIN_STEPS = flags.DEFINE_integer('min_steps', None, 'adaptive/confidence: fewest steps.')
MAX_STEPS = flags.DEFINE_integer('max_steps', None, 'adaptive/confidence: most steps.')
CONFIDENCE = flags.DEFINE_float('confidence_threshold', None, 'confidence: reveal above this prob.')
TOP_P = flags.DEFINE_float('top_p', None, 'Nucleus sampling mass (default: config.sample.top_p).')
SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
