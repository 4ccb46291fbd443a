"""The text_similarity metrics against the reference implementations, on random texts."""

import random

import pytest
from nltk.translate import meteor_score
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from nltk.translate.gleu_score import sentence_gleu
from rapidfuzz import fuzz
from rouge_score import rouge_scorer

from tunelab.evals.graders import similarity

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "dog",
    "ran",
    "fast",
    "The",
    "Cat,",
    "mat.",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
]


class _NoStems:
    def stem(self, word):
        return word


class _NoSynonyms:
    def synsets(self, word):
        return []


def _pairs(count=150, seed=0):
    rng = random.Random(seed)
    for _ in range(count):
        yield (
            " ".join(rng.choices(WORDS, k=rng.randint(1, 14))),
            " ".join(rng.choices(WORDS, k=rng.randint(1, 14))),
        )


REFERENCES = {
    "fuzzy_match": lambda text, ref: fuzz.ratio(text, ref) / 100,
    "bleu": lambda text, ref: sentence_bleu(
        [ref.split()], text.split(), smoothing_function=SmoothingFunction().method1
    ),
    "gleu": lambda text, ref: sentence_gleu([ref.split()], text.split()),
    "meteor": lambda text, ref: meteor_score.single_meteor_score(
        ref.split(), text.split(), stemmer=_NoStems(), wordnet=_NoSynonyms()
    ),
}


@pytest.mark.parametrize("metric", sorted(REFERENCES))
def test_metrics_equal_nltk_and_rapidfuzz(metric):
    ours = getattr(similarity, metric)
    for text, reference in _pairs():
        assert ours(text, reference) == pytest.approx(REFERENCES[metric](text, reference))


@pytest.mark.parametrize("order", ["rouge1", "rouge2", "rouge3", "rouge4", "rouge5", "rougeL"])
def test_rouge_equals_the_rouge_score_package(order):
    scorer = rouge_scorer.RougeScorer([order])
    for text, reference in _pairs():
        expected = scorer.score(reference, text)[order].fmeasure
        ours = (
            similarity.rouge_l(text, reference)
            if order == "rougeL"
            else similarity.rouge_n(text, reference, int(order[-1]))
        )
        assert ours == pytest.approx(expected)


def test_identical_texts_score_one_and_disjoint_texts_zero():
    text = "the quick brown fox jumps over the lazy dog"
    for metric in ("fuzzy_match", "bleu", "gleu", "rouge_l"):
        assert getattr(similarity, metric)(text, text) == pytest.approx(1.0)
    assert similarity.bleu("alpha beta", "gamma delta") == 0.0
    assert similarity.rouge_n("alpha beta", "gamma delta", 1) == 0.0
