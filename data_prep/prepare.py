r"""The data-preparation command: text -> ArrayRecord shards (+ optional entropies).

  python -m data_prep.prepare --source=builtin --out=/tmp/data
  python -m data_prep.prepare --source=text --paths='books/*.txt,more/' --out=DIR
  python -m data_prep.prepare --source=openwebtext --out=DIR          # HF hub
  python -m data_prep.prepare --source=openwebtext --data_files=x.parquet --out=DIR
  python -m data_prep.prepare --source=text8 --paths=text8.zip --out=DIR
  python -m data_prep.prepare ... --entropy_model=WORKDIR   # store per-byte entropies

The writer (split rule, shards, resume) is `data_prep.writer`; documents come
from `data_prep.sources`. This module only adds the command line and, for
--entropy_model, loads bltdiff's entropy model (the writer itself never imports
bltdiff's models, so the training code can call it without an import cycle).
"""

import os
import sys

from absl import app, flags

from data_prep import sources
from data_prep.errors import DataError
from data_prep.writer import DEFAULT_SHARD_BYTES, EntropyFn, prepare


def load_entropy_fn(workdir: str) -> EntropyFn:
  """The trained entropy model in `workdir` as an EntropyFn (bltdiff.entropy)."""
  try:
    from bltdiff import entropy  # another module's job; imported only when asked for
  except ImportError as e:
    raise DataError(f'--entropy_model needs bltdiff.entropy ({e})') from None
  if not os.path.isdir(workdir):
    raise DataError(f'{workdir}: entropy model workdir not found')
  return entropy.load_entropy_fn(workdir)


FLAGS = flags.FLAGS
flags.DEFINE_enum('source', 'builtin', list(sources.SOURCES), 'Where documents come from.')
flags.DEFINE_string('out', None, 'Output directory for shards and manifest.json.')
flags.DEFINE_string('paths', '', 'Comma-separated files / dirs / globs (text), or the zip (text8).')
flags.DEFINE_string('data_files', '', 'Local parquet / JSONL files with a `text` column (openwebtext, wikitext103); empty = HF hub.')
flags.DEFINE_float('validation_fraction', 0.05, 'Fraction of documents held out (every 1/f-th document).')
flags.DEFINE_integer('shard_bytes', DEFAULT_SHARD_BYTES, 'Target bytes per shard.')
flags.DEFINE_integer('doc_bytes', sources.DEFAULT_DOC_BYTES, 'Cut documents longer than this (0 = never).')
flags.DEFINE_integer('builtin_max_bytes', sources.DEFAULT_BUILTIN_MAX_BYTES, 'Size cap of the builtin corpus.')
flags.DEFINE_string('source_split', 'train', 'Split of the hub / TFDS dataset to read.')
flags.DEFINE_string('tfds_data_dir', None, 'TFDS data_dir (lm1b).')
flags.DEFINE_string('entropy_model', '', 'Workdir of a trained entropy model: store per-byte entropies.')


def main(argv):
  del argv
  if not FLAGS.out:
    raise app.UsageError('--out is required')
  try:
    entropy_fn = load_entropy_fn(FLAGS.entropy_model) if FLAGS.entropy_model else None
    manifest = prepare(FLAGS.source, FLAGS.out, paths=FLAGS.paths, data_files=FLAGS.data_files,
                       validation_fraction=FLAGS.validation_fraction, shard_bytes=FLAGS.shard_bytes,
                       doc_bytes=FLAGS.doc_bytes, builtin_max_bytes=FLAGS.builtin_max_bytes,
                       source_split=FLAGS.source_split, tfds_data_dir=FLAGS.tfds_data_dir,
                       entropy_fn=entropy_fn, log_every_s=5.0)
  except DataError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  for split, s in manifest['splits'].items():
    print(f'{split}: {s["documents"]} documents, {s["bytes"]} bytes, {len(s["shards"])} shards')


if __name__ == '__main__':
  app.run(main)
