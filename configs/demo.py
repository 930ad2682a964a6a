"""The embedded default, README's first command: the whole bltdiff chain at
demo scale on a CPU with nothing to download (configs/latent_demo.py): trains
the BLT entropy model on the built-in corpus (the Python installation's own
standard library and docs), prepares shards with per-byte entropies,
calibrates the patching threshold to 4.5 bytes per patch, trains the latent
MDLM, reports bits per byte and writes samples.

  python -m bltdiff.main --config=configs/demo.py --workdir=runs/demo

The byte-level MDLM baseline at the same scale: configs/byte_mdlm_demo.py.
"""

import importlib.util
import os

# Config files are loaded by path, not as a package: load the one beside this file.
_spec = importlib.util.spec_from_file_location(
    'latent_demo', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'latent_demo.py'))
latent_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(latent_demo)


def get_config():
  return latent_demo.get_config()
