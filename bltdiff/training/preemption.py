"""Stopping a training run cleanly on SIGTERM or SIGINT.

A preempted TPU VM or a SLURM job gets SIGTERM (and some seconds of grace), a
person presses Ctrl-C (SIGINT). Either way the loop finishes the step it is
in, saves a checkpoint of that step, waits for it to be written and stops with
one line saying how to resume (`Interrupted`, which bltdiff.main prints and
exits with 128 + the signal number, the shell's convention for a signal).

One process: Python signal handlers record the request; the loop asks
`requested(step)` after every step. Several processes must stop at the same
step, or their collectives would hang: there the request comes from JAX's
preemption sync point (`multihost_utils.reached_preemption_sync_point`, which
the distributed runtime's SIGTERM notifier feeds; every process agrees on the
step), and SIGINT is left alone.
"""

import signal
import threading

import jax

from bltdiff.errors import BltdiffError


class Interrupted(BltdiffError):
  """The run stopped on a signal after saving a checkpoint."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


class StopRequests:
  """Context manager: while inside, SIGTERM and SIGINT ask the loop to stop
  instead of killing it; a second SIGINT stops at once (KeyboardInterrupt)."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
    return False

  def _handle(self, signum, frame):
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt  # asked twice: do not wait for the step
    self.signum = signum

  def requested(self, step: int) -> bool:
    """Whether to stop after `step` (the same answer on every process)."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      if multihost_utils.reached_preemption_sync_point(step):
        self.signum = signal.SIGTERM
        return True
      return False
    return self.signum is not None

  def name(self) -> str:
    return signal.Signals(self.signum).name if self.signum else 'a stop request'
