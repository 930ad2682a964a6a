"""Imports of TensorFlow-backed libraries, without TensorFlow's start-up notices.

clu's metric writers (TensorBoard events) and tensorflow-datasets import
TensorFlow. Its C++ runtime then prints INFO notices to stderr before absl's
logging is initialised ("oneDNN custom operations are on", "This TensorFlow
binary is optimized to use ...", "All log messages before
absl::InitializeLog() ..."), and which ones depend on the CPU. No environment
variable silences them in TensorFlow 2.21 (TF_CPP_MIN_LOG_LEVEL is read too
late), so the import runs with file descriptor 2 captured: INFO lines and the
absl preamble are dropped, anything else (warnings, errors, a failed import's
message) is written back to stderr unchanged.

Only the code paths that need these libraries call this; nothing else in
bltdiff imports TensorFlow.
"""

import contextlib
import importlib
import os
import re
import sys
import tempfile

# Lines TensorFlow's C++ runtime prints at import as notices, not problems.
_NOTICE = re.compile(
    r'^(I\d{4} [\d:.]+ +\d+ [\w.]+\.cc:\d+\]'  # INFO line of a C++ source file
    r'|WARNING: All log messages before absl::InitializeLog\(\) is called'
    r'|To enable the following instructions: .* in other operations, rebuild TensorFlow)')


def is_notice(line: str) -> bool:
  """True for a TensorFlow start-up notice (dropped), False for anything else."""
  return bool(_NOTICE.match(line))


@contextlib.contextmanager
def _stderr_notices_dropped():
  """Captures fd 2 for the duration; then writes back every line but notices."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # later runtime INFO lines
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile(mode='w+b') as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      kept = [line for line in capture.read().decode('utf-8', 'replace').splitlines(True)
              if not is_notice(line)]
      if kept:
        sys.stderr.write(''.join(kept))
        sys.stderr.flush()


def import_quietly(module_name: str):
  """importlib.import_module(module_name) with TensorFlow's notices dropped.

  Modules already imported are returned at once (no capture)."""
  if module_name in sys.modules:
    return sys.modules[module_name]
  with _stderr_notices_dropped():
    return importlib.import_module(module_name)
