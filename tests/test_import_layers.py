"""The package's structure: the import-layering contract of pyproject.toml
(layers from the commands down to the building blocks, no import cycles, imports
inside functions included) and the size of its modules."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_MODULE_LINES = 300


def test_import_contracts_are_kept():
  lint = os.path.join(os.path.dirname(sys.executable), 'lint-imports')
  result = subprocess.run([lint], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
  assert 'Contracts: 2 kept, 0 broken.' in result.stdout


def test_no_module_is_long():
  long = []
  for package in ('bltdiff', 'data_prep', 'configs'):
    for root, _, files in os.walk(os.path.join(REPO, package)):
      for name in files:
        if name.endswith('.py'):
          path = os.path.join(root, name)
          with open(path) as f:
            lines = sum(1 for _ in f)
          if lines > MAX_MODULE_LINES:
            long.append((os.path.relpath(path, REPO), lines))
  assert not long, f'modules over {MAX_MODULE_LINES} lines: {long}'
