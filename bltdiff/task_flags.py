"""Flags of the task evaluation (--mode=eval_task), defined apart from the
command so that `bltdiff.main` parses them without importing it. The sampler
options, --output and --seed are the sampling command's (`bltdiff.sample_flags`)."""

from absl import flags

TASK_RUNS = flags.DEFINE_list('task_runs', [], 'eval_task: more trained pairs runs (workdirs) '
                              'to evaluate beside --workdir, on the same held-out pairs.')
EVALUATOR = flags.DEFINE_string('evaluator', None, 'eval_task: workdir of a byte_ar run trained '
                                'on pairs (data.format=pairs) that scores gen-bpb; none = no gen-bpb.')
SETTINGS = flags.DEFINE_list('task_settings', ['cached:64'], 'eval_task: sampler settings, each '
                             'SAMPLER:STEPS (e.g. cached:16,adaptive:64: for adaptive and '
                             'confidence STEPS is the step cap). byte_ar always decodes cached.')
NUM_EXAMPLES = flags.DEFINE_integer('num_examples', 64, 'eval_task: held-out pairs, the first of '
                                    'the validation split.')
TASK_BATCH = flags.DEFINE_integer('task_batch', 16, 'eval_task: examples generated per call.')
