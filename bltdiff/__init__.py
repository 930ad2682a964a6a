"""bltdiff: fast sampling of byte-level masked diffusion LMs over BLT patches.

`bltdiff.load(DIR)` is the Python API (bltdiff/api.py). Importing the package
stays cheap: JAX and the models load on the first call.
"""


def load(path: str):
  """The model in `path` (an export written by --mode=export, or a training run
  directory) with .sample, .encode, .decode and .bits_per_byte; see bltdiff.api."""
  from bltdiff import api
  return api.load(path)
