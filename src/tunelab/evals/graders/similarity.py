"""The `text_similarity` metrics, each a score in [0, 1] of `text` against `reference`.

Written here (no runtime dependency) and checked in the tests against the reference
implementations: `fuzzy_match` is rapidfuzz's `fuzz.ratio` / 100 (the Indel similarity of
the characters); `bleu` is NLTK's `sentence_bleu` (4-grams, uniform weights, smoothing
method 1) over whitespace tokens; `gleu` is NLTK's `sentence_gleu` (1- to 4-grams);
`meteor` is NLTK's `single_meteor_score` restricted to exact (lower-cased) matches: the stem
and WordNet synonym stages need NLTK's downloaded data, which an offline machine lacks;
`rouge_1`..`rouge_5` and `rouge_l` are Google's `rouge-score` F-measures (its tokenizer,
no stemming).
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

ROUGE_ORDERS = {f"rouge_{n}": n for n in range(1, 6)}


def fuzzy_match(text: str, reference: str) -> float:
    """Twice the longest common character subsequence over the total length."""
    total = len(text) + len(reference)
    if total == 0:
        return 1.0
    return 2 * _lcs_length(list(text), list(reference)) / total


def bleu(text: str, reference: str, max_order: int = 4) -> float:
    """Sentence BLEU: geometric mean of clipped n-gram precisions times the brevity penalty;
    an n-gram order with no match counts 0.1 matches (NLTK's smoothing method 1)."""
    hypothesis, gold = text.split(), reference.split()
    if not hypothesis:
        return 0.0
    logs = []
    for n in range(1, max_order + 1):
        counts = _ngrams(hypothesis, n)
        matched = sum((counts & _ngrams(gold, n)).values())
        possible = max(1, sum(counts.values()))  # NLTK's denominator for a too-short text
        if n == 1 and matched == 0:
            return 0.0
        logs.append(math.log((matched or 0.1) / possible))
    return _brevity_penalty(len(hypothesis), len(gold)) * math.exp(sum(logs) / max_order)


def gleu(text: str, reference: str, max_order: int = 4) -> float:
    """Google BLEU: the smaller of n-gram precision and recall, all orders 1..4 pooled."""
    hypothesis, gold = text.split(), reference.split()
    predicted, wanted = Counter(), Counter()
    for n in range(1, max_order + 1):
        predicted.update(_ngrams(hypothesis, n))
        wanted.update(_ngrams(gold, n))
    matched = sum((predicted & wanted).values())
    denominator = max(sum(predicted.values()), sum(wanted.values()))
    return matched / denominator if denominator else 0.0


def meteor(text: str, reference: str, alpha=0.9, beta=3.0, gamma=0.5) -> float:
    """METEOR with exact matches: F-mean weighted to recall, less a fragmentation penalty."""
    hypothesis, gold = text.lower().split(), reference.lower().split()
    matches = _exact_alignment(hypothesis, gold)
    if not matches:
        return 0.0
    precision, recall = len(matches) / len(hypothesis), len(matches) / len(gold)
    fmean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    return (1 - gamma * (_chunks(matches) / len(matches)) ** beta) * fmean


def rouge_n(text: str, reference: str, n: int) -> float:
    """ROUGE-N F-measure of the n-gram multisets."""
    predicted, wanted = _ngrams(rouge_tokens(text), n), _ngrams(rouge_tokens(reference), n)
    overlap = sum((predicted & wanted).values())
    return _f_measure(overlap, sum(predicted.values()), sum(wanted.values()))


def rouge_l(text: str, reference: str) -> float:
    """ROUGE-L F-measure: the longest common token subsequence."""
    predicted, wanted = rouge_tokens(text), rouge_tokens(reference)
    return _f_measure(_lcs_length(predicted, wanted), len(predicted), len(wanted))


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenizer: lower case, runs of [a-z0-9] only."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _brevity_penalty(length: int, reference_length: int) -> float:
    if length > reference_length:
        return 1.0
    return math.exp(1 - reference_length / length)


def _f_measure(overlap: int, predicted: int, wanted: int) -> float:
    if overlap == 0:
        return 0.0
    precision, recall = overlap / predicted, overlap / wanted
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: list, b: list) -> int:
    """Length of the longest common subsequence (one row of the table at a time)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def _exact_alignment(hypothesis: list[str], reference: list[str]) -> list[tuple[int, int]]:
    """(hypothesis index, reference index) pairs, ordered by hypothesis index: from the last
    hypothesis word back, each takes the latest unused reference word equal to it (NLTK's
    alignment, which the chunk count depends on)."""
    positions: dict[str, list[int]] = {}
    for j, word in enumerate(reference):
        positions.setdefault(word, []).append(j)
    pairs = []
    for i in range(len(hypothesis) - 1, -1, -1):
        free = positions.get(hypothesis[i])
        if free:
            pairs.append((i, free.pop()))
    return sorted(pairs)


def _chunks(matches: list[tuple[int, int]]) -> int:
    """How many runs of matches are adjacent in both texts."""
    breaks = sum(
        1 for (i, j), (k, m) in itertools.pairwise(matches) if not (k == i + 1 and m == j + 1)
    )
    return breaks + 1
