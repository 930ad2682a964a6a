"""Task metrics against values computed by hand on tiny strings (the computation
is written out beside each value)."""

import numpy as np
import pytest

from bltdiff import task_metrics as tm


def test_rouge_with_stemming_by_hand():
  # generation 'the cats sat', reference 'the cat sat on'. Tokens: lowercase
  # words; the stemmer maps 'cats' (4 letters) to 'cat'.
  #   ROUGE-1: generation {the, cat, sat}, reference {the, cat, sat, on}:
  #     3 matches, P = 3/3, R = 3/4, F = 2PR/(P+R) = 1.5/1.75 = 6/7.
  #   ROUGE-2: bigrams {the cat, cat sat} vs {the cat, cat sat, sat on}:
  #     2 matches, P = 2/2, R = 2/3, F = (4/3)/(5/3) = 0.8.
  #   ROUGE-L: LCS 'the cat sat' = 3, as ROUGE-1: 6/7.
  # Without stemming 'cats' != 'cat': ROUGE-1 would be P = 2/3, R = 2/4, F = 4/7.
  got = tm.rouge_f(['the cats sat'], ['the cat sat on'])
  assert got['rouge1'] == pytest.approx(6 / 7)
  assert got['rouge2'] == pytest.approx(0.8)
  assert got['rougeL'] == pytest.approx(6 / 7)


def test_rouge_lsum_takes_lines_as_sentences():
  # reference 'a b c\nd e f', generation 'd e f\na b c' (the same lines swapped).
  #   ROUGE-L over the whole token sequence: LCS of (a b c d e f) and
  #     (d e f a b c) is 3, P = R = 3/6, F = 0.5.
  #   ROUGE-Lsum: each reference line's union LCS with the generation's lines
  #     is the whole line (3 + 3 = 6 hits), P = 6/6, R = 6/6, F = 1.
  got = tm.rouge_f(['d e f\na b c'], ['a b c\nd e f'])
  assert got['rougeL'] == pytest.approx(0.5)
  assert got['rougeLsum'] == pytest.approx(1.0)


def test_distinct_n_counts_words_by_hand():
  gens = ['a b a b', 'a c']
  # unigrams: a b a b | a c -> 6 in all, unique {a, b, c} = 3 -> 3/6.
  assert tm.distinct_n(gens, 1) == pytest.approx(0.5)
  # bigrams: (a b)(b a)(a b) | (a c) -> 4 in all, unique 3 -> 3/4 (none spans the two generations).
  assert tm.distinct_n(gens, 2) == pytest.approx(0.75)
  # trigrams: (a b a)(b a b) | none ('a c' has two words) -> 2 unique of 2.
  assert tm.distinct_n(gens, 3) == pytest.approx(1.0)
  # Words, not bytes: 'aa aa' has 2 words, 1 unique -> 1/2 (byte unigrams would give 2/5).
  assert tm.distinct_n(['aa aa'], 1) == pytest.approx(0.5)
  assert tm.distinct_n(['one'], 2) == 0.0  # no bigram at all


def test_self_bleu_by_hand():
  # BLEU('a b c d'; refs ['a b c e']): n-gram precisions 1: 3/4, 2: 2/3 (ab, bc),
  # 3: 1/2 (abc), 4: 0/1 -> 'exp' smoothing makes the first zero count
  # 1/(2 * 1) = 1/2. Equal lengths: no brevity penalty. BLEU = (3/4 * 2/3 *
  # 1/2 * 1/2)^(1/4) = (1/8)^(1/4) ~ 0.5946, and the same the other way round.
  two = (1 / 8) ** 0.25
  assert tm.self_bleu(['a b c d', 'a b c e']) == pytest.approx(two)
  # A third generation sharing no word: 0 against the others, and it adds
  # nothing to the first two's scores (closest reference length is still 4):
  # mean = (two + two + 0) / 3.
  assert tm.self_bleu(['a b c d', 'a b c e', 'w x y z']) == pytest.approx(2 * two / 3)
  assert tm.self_bleu(['same words here', 'same words here']) == pytest.approx(1.0)
  assert tm.self_bleu(['alone']) == 0.0


def test_self_bleu_equals_sacrebleu_sentence_bleu_against_the_others():
  """The one-pass computation gives sacrebleu's own sentence_bleu(g_i, others), averaged."""
  import sacrebleu
  rng = np.random.default_rng(0)
  words = ['a', 'b', 'c', 'd', 'the', 'cat.', 'Cat', '"hi,"', '(x)']  # few words: many shared, repeated n-grams
  gens = [' '.join(rng.choice(words, rng.integers(0, 14))) for _ in range(25)] + ['a b c d', 'a b c d', '']
  naive = np.mean([sacrebleu.sentence_bleu(g, gens[:i] + gens[i + 1:]).score for i, g in enumerate(gens)]) / 100
  assert 0.05 < naive < 0.95
  assert tm.self_bleu(gens) == pytest.approx(naive, abs=1e-12)


def test_task_metrics_by_hand():
  pairs = [('the cats sat', 'the cat sat on'), ('abcdefghabcdefgh', 'x'), ('é', 'y')]
  m = tm.task_metrics(pairs)
  # ROUGE: 6/7, 0 (no shared word), 0 ('é' is no [a-z0-9] token) -> means.
  assert m['rouge1'] == pytest.approx(6 / 7 / 3) and m['rouge2'] == pytest.approx(0.8 / 3)
  # Byte 8-grams, per generation: 'the cats sat' (12 bytes) has 5, all new;
  # 'abcdefghabcdefgh' (16 bytes) has 9, of which the last, 'abcdefgh', repeats
  # the first; 'é' (2 bytes) has none -> 1 repeat / 14.
  assert m['repeat_8gram'] == pytest.approx(1 / 14)
  # Bytes: 12 + 16 + 2 ('é' is 2 UTF-8 bytes) = 30 -> 10. Words: 3 + 1 + 1 -> 5/3.
  assert m['mean_bytes'] == pytest.approx(10.0) and m['mean_words'] == pytest.approx(5 / 3)
  # Unigrams: the cats sat | abcdefghabcdefgh | é -> 5 unique of 5.
  assert m['distinct_1'] == 1.0 and m['count'] == 3.0
  assert set(m) == {'rouge1', 'rouge2', 'rougeL', 'rougeLsum', 'distinct_1', 'distinct_2', 'distinct_3',
                    'self_bleu', 'repeat_8gram', 'mean_bytes', 'mean_words', 'count'}


def test_bytes_in_and_invalid_utf8():
  # Generations straight from a byte model: bytes, possibly not UTF-8.
  m = tm.task_metrics([(b'the cats sat\xff', b'the cat sat on')])
  # '\xff' decodes to U+FFFD, a word break for ROUGE: still 6/7; 13 bytes.
  assert m['rouge1'] == pytest.approx(6 / 7) and m['mean_bytes'] == 13.0


def test_mismatched_lengths_are_an_error():
  with pytest.raises(ValueError, match='2 generations but 1 references'):
    tm.rouge_f(['a', 'b'], ['a'])
