"""Progress of a long data preparation in the log: units, bytes, MB/s and ETA."""

import time

from absl import logging


class Progress:
  """Logs units (documents), bytes, MB/s and ETA at most every `every_s` seconds."""

  def __init__(self, total_bytes: int | None, every_s: float, noun: str = 'docs'):
    self.total, self.every_s, self.noun = total_bytes, every_s, noun
    self.start = self.last = time.monotonic()
    self.docs = self.bytes = 0

  def add(self, nbytes: int, force: bool = False) -> None:
    self.docs += 1
    self.bytes += nbytes
    now = time.monotonic()
    if force or now - self.last >= self.every_s:
      self.last = now
      self.log()

  def log(self) -> None:
    dt = max(time.monotonic() - self.start, 1e-9)
    rate = self.bytes / dt
    eta = f'{max(self.total - self.bytes, 0) / rate:.0f}s' if self.total and rate > 0 else '?'
    logging.info('prepare: %d %s, %.1f MB, %.2f MB/s, ETA %s', self.docs, self.noun, self.bytes / 1e6, rate / 1e6, eta)
