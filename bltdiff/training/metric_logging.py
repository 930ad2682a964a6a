"""Where training metrics go: TensorBoard event files, workdir/metrics.jsonl, the log.

clu's writers import TensorFlow (for TensorBoard events), which costs seconds
and prints start-up notices, so they are imported here, only when a run starts
writing, through `tensorflow_import.import_quietly`. Everything else in bltdiff
(config errors, sampling, eval) never imports TensorFlow.
"""

import json

from etils import epath

from bltdiff import tensorflow_import


class JsonlWriter:
  """Scalars as JSON lines {"step": s, name: value, ...} appended to one file:
  readable without TensorBoard (tests, benchmarks, quick plots). Implements
  clu's MetricWriter interface; only scalars are written."""

  def __init__(self, path: epath.PathLike, resumed_at: int = 0):
    """path: local or gs:// (etils.epath; appending to a GCS object rewrites
    it, which a metrics file of kilobytes affords). resumed_at: the step the
    run resumed from; rows written after it by an earlier, interrupted
    process are dropped (the steps are replayed)."""
    self.path = epath.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if self.path.exists():
      rows = [line + '\n' for line in self.path.read_text().splitlines() if line.strip()]
      kept = [line for line in rows if json.loads(line)['step'] <= resumed_at]
      if len(kept) < len(rows):
        tmp = self.path.with_name(self.path.name + '.tmp')
        tmp.write_text(''.join(kept))
        tmp.replace(self.path)  # atomic: an interrupt here loses no row

  def write_scalars(self, step, scalars):
    row = {'step': int(step), **{k: float(v) for k, v in scalars.items()}}
    with self.path.open('a') as f:
      f.write(json.dumps(row) + '\n')

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def make_writer(workdir: str, is_main_process: bool, resumed_at: int = 0):
  """TensorBoard events and metrics.jsonl in workdir on the main process; the
  log alone elsewhere. resumed_at: see JsonlWriter."""
  metric_writers = tensorflow_import.import_quietly('clu.metric_writers')
  writer = metric_writers.create_default_writer(workdir, just_logging=not is_main_process)
  if is_main_process:
    writer = metric_writers.MultiWriter([writer, JsonlWriter(
        epath.Path(workdir) / 'metrics.jsonl', resumed_at)])
  return writer


def make_progress(num_steps: int, writer, every_steps: int):
  """clu's ReportProgress: steps/s and ETA in the log and the writer."""
  periodic_actions = tensorflow_import.import_quietly('clu.periodic_actions')
  return periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                         every_secs=None, every_steps=every_steps)
