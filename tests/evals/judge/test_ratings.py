from __future__ import annotations

import math
import random

import numpy as np
import pytest

from tunelab.evals.judge.ratings import bradley_terry, rating_intervals

# Known strengths on the Elo scale, mean 0: reported ratings are centred on base = 1000.
TRUE_RATINGS = {"a": -300, "b": -100, "c": 0, "d": 150, "e": 250}


def simulate_tournament(games_per_pair: int = 60, seed: int = 1) -> list[tuple[str, str, float]]:
    """Round robin; each game won by the first player with the Bradley–Terry probability."""
    rng = np.random.default_rng(seed)
    names, outcomes = list(TRUE_RATINGS), []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            p_first = 1 / (1 + 10 ** ((TRUE_RATINGS[second] - TRUE_RATINGS[first]) / 400))
            outcomes += [
                (first, second, float(rng.random() < p_first)) for _ in range(games_per_pair)
            ]
    return outcomes


def test_bradley_terry_recovers_known_strengths():
    ratings = bradley_terry(simulate_tournament())
    assert sorted(ratings, key=ratings.get) == list(TRUE_RATINGS)
    assert np.mean(list(ratings.values())) == pytest.approx(1000)
    for name, truth in TRUE_RATINGS.items():
        assert ratings[name] == pytest.approx(1000 + truth, abs=60)


def test_intervals_cover_the_truth_for_most_players():
    intervals = rating_intervals(simulate_tournament(), n_bootstrap=500, seed=2)
    point = bradley_terry(simulate_tournament())
    covered = 0
    for name, truth in TRUE_RATINGS.items():
        r = intervals[name]
        assert r["rating"] == pytest.approx(point[name])
        assert r["low"] < r["rating"] < r["high"]
        assert r["high"] - r["low"] < 200
        assert r["games"] == 4 * 60
        covered += r["low"] <= 1000 + truth <= r["high"]
    assert covered >= 4
    assert rating_intervals(simulate_tournament(), n_bootstrap=50, seed=2) == rating_intervals(
        simulate_tournament(), n_bootstrap=50, seed=2
    )


def test_ratings_do_not_depend_on_the_order_of_the_games():
    outcomes = simulate_tournament(games_per_pair=20)
    shuffled = list(outcomes)
    random.Random(7).shuffle(shuffled)
    fitted, refitted = bradley_terry(outcomes), bradley_terry(shuffled)
    assert refitted == pytest.approx(fitted, abs=1e-6)


def test_ties_count_as_half_a_win():
    assert bradley_terry([("x", "y", 0.5)] * 5) == {"x": 1000.0, "y": 1000.0}
    assert bradley_terry([("x", "y", 1.0), ("x", "y", 0.0)]) == pytest.approx(
        bradley_terry([("x", "y", 0.5), ("y", "x", 0.5)])
    )
    # 2 wins and 2 ties = 3 of 4 points, like 3 wins and a loss.
    two_ties = bradley_terry([("x", "y", 1.0)] * 2 + [("x", "y", 0.5)] * 2)
    one_loss = bradley_terry([("x", "y", 1.0)] * 3 + [("y", "x", 1.0)])
    assert two_ties == pytest.approx(one_loss)


def test_rating_gap_is_on_the_elo_scale():
    # Scoring 3 of 4 means a strength ratio of 3: 400·log10(3) ≈ 191 points, without prior.
    outcomes = [("x", "y", 1.0)] * 3 + [("x", "y", 0.0)]
    nearly_mle = bradley_terry(outcomes, prior_games=1e-6)
    assert nearly_mle["x"] - nearly_mle["y"] == pytest.approx(400 * math.log10(3), abs=0.1)
    shrunk = bradley_terry(outcomes)
    assert 100 < shrunk["x"] - shrunk["y"] < 400 * math.log10(3)


def test_a_player_that_never_loses_gets_a_finite_rating_from_the_prior():
    outcomes = [("champ", "mid", 1.0)] * 10 + [("mid", "low", 1.0)] * 6 + [("low", "mid", 1.0)] * 2
    ratings = bradley_terry(outcomes)
    assert all(math.isfinite(r) for r in ratings.values())
    assert ratings["champ"] > ratings["mid"] + 200
    # The prior is what bounds it: less prior, higher rating.
    weaker_prior = bradley_terry(outcomes, prior_games=0.01)
    assert weaker_prior["champ"] - weaker_prior["mid"] > ratings["champ"] - ratings["mid"] + 300
    with pytest.raises(ValueError):
        bradley_terry(outcomes, prior_games=0)
    intervals = rating_intervals(outcomes, n_bootstrap=100)
    assert all(math.isfinite(v) for r in intervals.values() for v in (r["low"], r["high"]))


def test_disconnected_groups_still_get_ratings():
    ratings = bradley_terry([("p", "q", 1.0)] * 3 + [("r", "s", 1.0)] * 3)
    assert ratings["p"] == pytest.approx(ratings["r"]) and ratings["p"] > ratings["q"]


def test_bad_outcomes_and_empty_input():
    assert bradley_terry([]) == {} and rating_intervals([]) == {}
    with pytest.raises(ValueError):
        bradley_terry([("x", "x", 1.0)])
    with pytest.raises(ValueError):
        bradley_terry([("x", "y", 2.0)])
