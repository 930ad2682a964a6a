r"""Prepares a run's inputs once, in one process, before a multi-host run.

  python launch/prepare_run.py --config=configs/owt.py --workdir=gs://BUCKET/runs/owt \
      [--config.data.data_files=...]

Runs the trainer's own preparation (`bltdiff.data_chain.prepare_run_data`) for the config:
the shards of its data source in WORKDIR/data and, for the latent MDLM, the
entropy model (WORKDIR/entropy_model), the entropies stored beside the bytes
and the patching-threshold calibration (WORKDIR/calibration.json). Every step
skips what is already there, so `python -m bltdiff.main` on all hosts then
finds everything in place instead of preparing while the whole job waits.

Takes the same --config and --config.<field>=value overrides as bltdiff.main,
so that what is prepared is what the run trains on. Used by
launch/tpu_vm_pod.sh (`prepare`) and launch/gpu_multinode.sh (`prepare`, and
before training in `slurm`).
"""

import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Run config (a get_config() file).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (local path or gs:// URL).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from bltdiff import config_checks, data_chain
  from bltdiff.errors import BltdiffError
  try:
    config_checks.validate(_CONFIG.value)
    prepared = data_chain.prepare_run_data(_CONFIG.value, _WORKDIR.value).data.prepared_dir
  except BltdiffError as e:
    sys.exit(f'error: {e}')
  print(f'prepared: {prepared}')


if __name__ == '__main__':
  app.run(main)
