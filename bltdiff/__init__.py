"""bltdiff: fast sampling of byte-level masked diffusion LMs over BLT patches.

`bltdiff.load(DIR)` is the Python API (`bltdiff.api.load`): the model in DIR
(an export written by --mode=export, or a training run directory) with
.sample, .encode, .decode and .bits_per_byte.

The package's own __init__ imports none of its modules: every module imports
`bltdiff`, so an import here would close a cycle. `load` is a lazy attribute
(PEP 562), resolved on first use, which also keeps `import bltdiff` cheap (no
JAX until a model is loaded).
"""

import importlib

__all__ = ['load']


def __getattr__(name: str):
  if name == 'load':
    return importlib.import_module('bltdiff.api').load
  raise AttributeError(f'module bltdiff has no attribute {name!r}')
