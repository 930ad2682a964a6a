r"""The data-preparation command: text or (source, target) pairs -> ArrayRecord shards.

  python -m data_prep.prepare --source=builtin --out=/tmp/data
  python -m data_prep.prepare --source=text --paths='books/*.txt,more/' --out=DIR
  python -m data_prep.prepare --source=openwebtext --out=DIR          # HF hub
  python -m data_prep.prepare --source=openwebtext --data_files=x.parquet --out=DIR
  python -m data_prep.prepare --source=text8 --paths=text8.zip --out=DIR
  python -m data_prep.prepare ... --entropy_model=WORKDIR   # store per-byte entropies
  python -m data_prep.prepare ... --process_index=I --process_count=N   # N processes, one directory

Pairs (--format=pairs; one record = one (source, target) pair):
  python -m data_prep.prepare --format=pairs --source=cnn_dailymail --out=DIR     # TFDS
  python -m data_prep.prepare --format=pairs --source=xsum --source_split=test --validation_fraction=1 --out=DIR
  python -m data_prep.prepare --format=pairs --source=writingprompts --data_files=wp.parquet --out=DIR
  python -m data_prep.prepare --format=pairs --source=builtin --passage_bytes=256 --out=DIR  # passage -> next
  python -m data_prep.prepare --format=pairs ... --entropy_model=WORKDIR   # source and target entropies

The writer (split rule, shards, resume) is `data_prep.writer`; documents come
from `data_prep.sources`, pairs from `data_prep.pair_sources`. This module only adds the command line and, for
--entropy_model, loads bltdiff's entropy model (the writer itself never imports
bltdiff's models, so the training code can call it without an import cycle).
--out and --entropy_model may be gs:// URLs.

Several processes (e.g. one per host, each scoring entropies on its own
devices) prepare one --out together: each writes every N-th shard. With
--entropy_model, the defaults are JAX's process index and count, JAX's
multi-process runtime being started from BLTDIFF_COORDINATOR_ADDRESS,
BLTDIFF_NUM_PROCESSES, BLTDIFF_PROCESS_ID as `bltdiff.main` does; the
processes then meet at a barrier and process 0 writes the manifest. Given
explicitly (independent processes, no JAX runtime), the last process to
finish writes it.
"""

import sys

from absl import app, flags
from etils import epath

from data_prep import manifest as mf
from data_prep import pair_sources
from data_prep import sources
from data_prep.errors import DataError
from data_prep.writer import DEFAULT_SHARD_BYTES, EntropyFn, prepare


def load_entropy_fn(workdir: str) -> EntropyFn:
  """The trained entropy model in `workdir` as an EntropyFn."""
  from bltdiff.training import restore  # the trainer's loader; JAX only when asked for
  if not epath.Path(workdir).is_dir():
    raise DataError(f'{workdir}: entropy model workdir not found')
  return restore.load_entropy_fn(workdir)


FLAGS = flags.FLAGS
flags.DEFINE_enum('format', 'text', list(mf.FORMATS),
                  'text: one record = one document. pairs: one record = one (source, target) pair.')
flags.DEFINE_enum('source', 'builtin', list(sources.SOURCES) + list(pair_sources.PAIR_SOURCES),
                  'Where the data comes from. Text sources: ' + ', '.join(sources.SOURCES) + '; with --format=pairs '
                  'they give passage -> next passage pairs. Pair datasets (--format=pairs only): '
                  + ', '.join(pair_sources.PAIR_SOURCES) + '.')
flags.DEFINE_string('out', None, 'Output directory for shards and manifest.json.')
flags.DEFINE_string('paths', '', 'Comma-separated files / dirs / globs (text), or the zip (text8).')
flags.DEFINE_string('data_files', '', 'Local parquet / JSONL files instead of the HF hub / TFDS: a `text` column '
                    '(openwebtext, wikitext103); article/highlights (cnn_dailymail), document/summary (xsum), '
                    'prompt/story (writingprompts).')
flags.DEFINE_float('validation_fraction', 0.05, 'Fraction of units held out (every 1/f-th document or pair; '
                   '1 = all, for an evaluation-only directory).')
flags.DEFINE_integer('passage_bytes', pair_sources.DEFAULT_PASSAGE_BYTES,
                     'Passage size of passage -> next passage pairs (--format=pairs with a text source).')
flags.DEFINE_integer('shard_bytes', DEFAULT_SHARD_BYTES, 'Target bytes per shard.')
flags.DEFINE_integer('doc_bytes', sources.DEFAULT_DOC_BYTES, 'Cut documents longer than this (0 = never).')
flags.DEFINE_integer('builtin_max_bytes', sources.DEFAULT_BUILTIN_MAX_BYTES, 'Size cap of the builtin corpus.')
flags.DEFINE_string('source_split', 'train', 'Split of the hub / TFDS dataset to read.')
flags.DEFINE_string('tfds_data_dir', None, 'TFDS data_dir (lm1b, cnn_dailymail).')
flags.DEFINE_string('entropy_model', '', 'Workdir of a trained entropy model: store per-byte entropies.')
flags.DEFINE_integer('process_index', None, 'This process, in [0, process_count) (default: see the module docstring).')
flags.DEFINE_integer('process_count', None, 'Processes preparing --out together (default: see the module docstring).')


def processes(with_jax: bool):
  """(process_index, process_count, barrier or None) of this command."""
  index, count = FLAGS.process_index, FLAGS.process_count
  if (index is None) != (count is None):
    raise app.UsageError('--process_index and --process_count go together')
  if index is not None or not with_jax:
    return (index or 0), (count or 1), None
  import jax
  from bltdiff import distributed
  distributed.initialize()  # from the BLTDIFF_* environment; nothing for one process
  if jax.process_count() == 1:
    return 0, 1, None
  from jax.experimental import multihost_utils
  return jax.process_index(), jax.process_count(), multihost_utils.sync_global_devices


def main(argv):
  del argv
  if not FLAGS.out:
    raise app.UsageError('--out is required')
  process_index, process_count, barrier = processes(with_jax=bool(FLAGS.entropy_model))
  try:
    entropy_fn = load_entropy_fn(FLAGS.entropy_model) if FLAGS.entropy_model else None
    manifest = prepare(FLAGS.source, FLAGS.out, data_format=FLAGS.format, paths=FLAGS.paths,
                       data_files=FLAGS.data_files, passage_bytes=FLAGS.passage_bytes,
                       validation_fraction=FLAGS.validation_fraction, shard_bytes=FLAGS.shard_bytes,
                       doc_bytes=FLAGS.doc_bytes, builtin_max_bytes=FLAGS.builtin_max_bytes,
                       source_split=FLAGS.source_split, tfds_data_dir=FLAGS.tfds_data_dir,
                       entropy_fn=entropy_fn, log_every_s=5.0, process_index=process_index,
                       process_count=process_count, barrier=barrier)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except OSError as e:  # a full disk, a file that vanished, permissions: one line, not a traceback
    print(f'error: {e.filename or FLAGS.out}: {e.strerror or e}', file=sys.stderr)
    sys.exit(2)
  if manifest is None:
    print(f'process {process_index} of {process_count}: its shards are written; the last process to '
          f'finish writes the manifest')
    return
  noun = mf.count_key(FLAGS.format)
  for split, s in manifest['splits'].items():
    print(f'{split}: {s[noun]} {noun}, {s["bytes"]} bytes, {len(s["shards"])} shards')


if __name__ == '__main__':
  app.run(main)
