"""What every command of the package does around its work: usage checks, and
a user's error as one line (`error: ...`) with a non-zero exit status."""

import sys
from typing import Callable

from absl import app, flags

from bltdiff.errors import BltdiffError


def run_command(run: Callable, argv, required: tuple[str, ...] = ()):
  """Calls run(flags.FLAGS) after checking argv and the required flags."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for name in required:
    if not getattr(flags.FLAGS, name):
      raise app.UsageError(f'--{name} is required')
  try:
    return run(flags.FLAGS)
  except BltdiffError as e:
    sys.exit(f'error: {e}')
