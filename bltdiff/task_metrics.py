"""Task metrics of conditional generation: summarization, story continuation, conditional text.

`task_metrics(pairs)` scores (generation, reference) pairs and returns a dict;
texts are str or bytes (a byte model's output). The text metrics decode bytes
as UTF-8 (invalid bytes as U+FFFD); the byte metrics read bytes as they are
and str as UTF-8.

Against the references (mean over pairs, F-measures in [0, 1], not x100):
  rouge1, rouge2, rougeL, rougeLsum   `rouge-score` 0.1.2, RougeScorer with
      use_stemmer=True (Porter stemmer on words of more than 3 letters, as
      ROUGE-1.5.5 -m), its default tokenizer (lowercase; anything not
      [a-z0-9] is a word break, so non-ASCII letters are dropped), and
      split_summaries=False: rougeLsum (summary-level LCS, the figure usually
      reported for CNN/DailyMail) takes each line as a sentence, as the TFDS
      highlights are written.
Over the set of generations (references unused):
  distinct_1, distinct_2, distinct_3   unique word n-grams / all word n-grams,
      pooled over the generations (an n-gram never spans two generations);
      words = whitespace-separated runs (str.split()), case and punctuation
      kept. Words rather than bytes: byte n-grams of small n repeat in any
      text, and word-level distinct-n is the measure the story-generation
      literature reports. 0 when there are no n-grams.
  self_bleu   mean over generations i of BLEU(generation i; references = all
      other generations), in [0, 1]; high = generations alike (low
      diversity); 0 for fewer than two generations. Exactly the mean of
      `sacrebleu` 2.6.0 `sentence_bleu(g_i, others)` with its defaults (4-gram,
      'exp' smoothing, '13a' tokenizer, case-sensitive, effective order), but
      from sacrebleu's parts (its tokenizer, n-gram extraction and
      BLEU.compute_bleu) with the multi-reference clipping done once for all:
      an n-gram's count in "the others" is the largest count among the other
      generations, i.e. the largest or, for its owner, the second largest. So
      it costs one pass over the n-grams instead of N sentence_bleu calls on
      N - 1 references each (300 generations of 150 words: 83 s that way).
  repeat_8gram   `bltdiff.sample_quality.repeated_ngram_fraction` over the
      generations' bytes: byte 8-grams that already occurred in the same
      generation / all byte 8-grams.
  mean_bytes, mean_words   mean UTF-8 bytes / whitespace words per generation.
  count   number of pairs.
"""

from typing import Sequence

import numpy as np
from rouge_score import rouge_scorer
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.helpers import extract_all_word_ngrams

from bltdiff.sample_quality import repeated_ngram_fraction

Text = str | bytes
ROUGE_TYPES = ('rouge1', 'rouge2', 'rougeL', 'rougeLsum')


def as_text(text: Text) -> str:
  return text.decode('utf-8', errors='replace') if isinstance(text, bytes) else text


def as_utf8(text: Text) -> bytes:
  return text if isinstance(text, bytes) else text.encode('utf-8')


def rouge_per_pair(generations: Sequence[Text], references: Sequence[Text]) -> dict[str, np.ndarray]:
  """ROUGE F-measures (module docstring) of generation i against reference i:
  {name: float [n]} (per pair, for intervals over examples)."""
  if len(generations) != len(references):
    raise ValueError(f'{len(generations)} generations but {len(references)} references')
  scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True, split_summaries=False)
  out = {name: np.zeros(len(generations)) for name in ROUGE_TYPES}
  for i, (gen, ref) in enumerate(zip(generations, references)):
    scores = scorer.score(as_text(ref), as_text(gen))  # score(target, prediction)
    for name in ROUGE_TYPES:
      out[name][i] = scores[name].fmeasure
  return out


def rouge_f(generations: Sequence[Text], references: Sequence[Text]) -> dict[str, float]:
  """Mean ROUGE F-measures (module docstring) of generation i against reference i."""
  per_pair = rouge_per_pair(generations, references)
  return {name: float(v.mean()) if len(v) else 0.0 for name, v in per_pair.items()}


def distinct_n(generations: Sequence[Text], n: int) -> float:
  """Unique word n-grams / all word n-grams, pooled over generations (module docstring)."""
  grams = []
  for gen in generations:
    words = as_text(gen).split()
    grams.extend(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
  return len(set(grams)) / len(grams) if grams else 0.0


def self_bleu(generations: Sequence[Text]) -> float:
  """Mean BLEU of each generation against all the others (module docstring), in [0, 1]."""
  if len(generations) < 2:
    return 0.0
  bleu = BLEU(smooth_method='exp', effective_order=True)  # sacrebleu.sentence_bleu's settings
  order = bleu.max_ngram_order
  counts, lengths = [], []
  for gen in generations:  # as BLEU preprocesses a segment: rstrip, then its tokenizer
    grams, length = extract_all_word_ngrams(bleu.tokenizer(as_text(gen).rstrip()), 1, order)
    counts.append(grams)
    lengths.append(length)
  largest, owner, second = {}, {}, {}  # per n-gram: the two largest counts, and who has the largest
  for i, grams in enumerate(counts):
    for gram, c in grams.items():
      if c > largest.get(gram, 0):
        second[gram], largest[gram], owner[gram] = largest.get(gram, 0), c, i
      elif c > second.get(gram, 0):
        second[gram] = c
  lengths = np.asarray(lengths)
  scores = []
  for i, grams in enumerate(counts):
    correct, total = [0] * order, [0] * order
    for gram, c in grams.items():
      total[len(gram) - 1] += c
      correct[len(gram) - 1] += min(c, second[gram] if owner[gram] == i else largest[gram])
    others = np.delete(lengths, i)  # closest reference length; on a tie the shorter, as sacrebleu
    gap = np.abs(others - lengths[i])
    ref_len = int(others[gap == gap.min()].min())
    scores.append(BLEU.compute_bleu(correct, total, int(lengths[i]), ref_len, smooth_method=bleu.smooth_method,
                                    smooth_value=bleu.smooth_value, effective_order=bleu.effective_order,
                                    max_ngram_order=order).score)
  return float(np.mean(scores)) / 100.0


def task_metrics(pairs: Sequence[tuple[Text, Text]]) -> dict[str, float]:
  """All metrics of the module docstring for (generation, reference) pairs."""
  generations = [g for g, _ in pairs]
  references = [r for _, r in pairs]
  generation_bytes = [as_utf8(g) for g in generations]
  metrics = rouge_f(generations, references)
  for n in (1, 2, 3):
    metrics[f'distinct_{n}'] = distinct_n(generations, n)
  metrics['self_bleu'] = self_bleu(generations)
  metrics['repeat_8gram'] = repeated_ngram_fraction(generation_bytes, 8)
  metrics['mean_bytes'] = float(np.mean([len(b) for b in generation_bytes])) if pairs else 0.0
  metrics['mean_words'] = float(np.mean([len(as_text(g).split()) for g in generations])) if pairs else 0.0
  metrics['count'] = float(len(pairs))
  return metrics
