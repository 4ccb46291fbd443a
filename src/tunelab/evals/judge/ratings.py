"""Ratings from pairwise outcomes: Bradley–Terry by maximum likelihood, on the Elo scale.

An outcome is `(first, second, score)` with the score of `first`: 1 a win, 0.5 a tie, 0 a
loss (any value in between counts as that share of a win). Ties count as half a win for
each side, the usual Bradley–Terry treatment.

`bradley_terry` is the rating to report: it depends only on the outcomes, not on their order
(classic Elo updates do, which makes two runs over the same games disagree). Strengths are
fitted by Newton's method and reported as `base + 400·log10(strength)`, centred so that
the players' mean rating is `base`: 200 points apart means the stronger is expected to score
about 76%.

Regularisation: each player also plays `prior_games` virtual games against a fixed reference
player, half of them won (a virtual draw). Without it, a player that never loses has an
infinite maximum-likelihood rating, and players not connected by any chain of games have no
common scale. The default (one virtual game) shrinks ratings a little towards each other:
20 wins and 10 losses give a gap of 118 points instead of 120.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Outcome = tuple[str, str, float]
ELO_SCALE = 400 / math.log(10)  # Elo points per natural-log unit of strength


def _indexed(outcomes: Sequence[Outcome], players: list[str]) -> tuple[np.ndarray, ...]:
    """The outcomes as arrays: first player's index, second's, first's score."""
    index = {name: i for i, name in enumerate(players)}
    for first, second, score in outcomes:
        if first == second or not 0 <= score <= 1:
            raise ValueError(f"bad outcome {(first, second, score)!r}")
    first = np.array([index[o[0]] for o in outcomes], dtype=int)
    second = np.array([index[o[1]] for o in outcomes], dtype=int)
    return first, second, np.array([o[2] for o in outcomes], dtype=float)


def _tally(first: np.ndarray, second: np.ndarray, score: np.ndarray, n_players: int):
    """Score matrix (row's total score against column) and games matrix."""
    scores = np.zeros((n_players, n_players))
    games = np.zeros_like(scores)
    np.add.at(scores, (first, second), score)
    np.add.at(scores, (second, first), 1 - score)
    np.add.at(games, (first, second), 1)
    np.add.at(games, (second, first), 1)
    return scores, games


def _players(outcomes: Sequence[Outcome]) -> list[str]:
    return sorted({name for first, second, _ in outcomes for name in (first, second)})


def _log_likelihood(theta: np.ndarray, scores: np.ndarray, prior_games: float) -> float:
    """Penalised Bradley–Terry log-likelihood of log-strengths `theta` (reference at 0)."""
    log_win = -np.logaddexp(0, theta[None, :] - theta[:, None])  # log P(row beats column)
    prior = -np.logaddexp(0, -theta) - np.logaddexp(0, theta)  # one virtual draw's log-lik
    return float((scores * log_win).sum() + prior_games / 2 * prior.sum())


def _fit_log_strengths(scores: np.ndarray, games: np.ndarray, prior_games: float) -> np.ndarray:
    """Maximum-likelihood log-strengths by Newton's method with backtracking.

    The penalised likelihood is strictly concave, so this converges from anywhere, in a
    handful of steps (the MM algorithm needs thousands when strengths are far apart).
    """
    theta = np.zeros(len(scores))
    for _ in range(200):
        p = 1 / (1 + np.exp(theta[None, :] - theta[:, None]))
        own = 1 / (1 + np.exp(-theta))
        gradient = (scores - games * p).sum(axis=1) + prior_games * (0.5 - own)
        weights = games * p * (1 - p)
        hessian = weights - np.diag(weights.sum(axis=1) + prior_games * own * (1 - own))
        step = -np.linalg.solve(hessian, gradient)
        if np.max(np.abs(step)) < 1e-9:
            break
        current, scale = _log_likelihood(theta, scores, prior_games), 1.0
        while scale > 1e-6 and _log_likelihood(theta + scale * step, scores, prior_games) < current:
            scale /= 2
        theta = theta + scale * step
    return theta


def bradley_terry(
    outcomes: Sequence[Outcome], *, base: float = 1000.0, prior_games: float = 1.0
) -> dict[str, float]:
    """Each player's rating on the Elo scale, centred on `base` (see the module docstring)."""
    players = _players(outcomes)
    if not players:
        return {}
    scores, games = _tally(*_indexed(outcomes, players), len(players))
    ratings = _centred_ratings(scores, games, base, prior_games)
    return {name: float(r) for name, r in zip(players, ratings, strict=True)}


def _centred_ratings(
    scores: np.ndarray, games: np.ndarray, base: float, prior_games: float
) -> np.ndarray:
    """Elo-scale ratings centred on the players that played; NaN for those that did not."""
    if prior_games <= 0:
        raise ValueError("prior_games must be positive: it keeps every rating finite")
    played = games.sum(axis=1) > 0
    log_strength = _fit_log_strengths(scores, games, prior_games)
    ratings = base + ELO_SCALE * (log_strength - log_strength[played].mean())
    return np.where(played, ratings, np.nan)


def rating_intervals(
    outcomes: Sequence[Outcome],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    base: float = 1000.0,
    prior_games: float = 1.0,
) -> dict[str, dict]:
    """Bradley–Terry ratings with percentile bootstrap intervals (outcomes resampled).

    Returns `{name: {"rating", "low", "high", "games"}}`, the shape reports show.
    """
    players = _players(outcomes)
    if not players:
        return {}
    first, second, score = _indexed(outcomes, players)
    scores, games = _tally(first, second, score, len(players))
    point = _centred_ratings(scores, games, base, prior_games)
    rng = np.random.default_rng(seed)
    samples = np.empty((n_bootstrap, len(players)))
    for b in range(n_bootstrap):
        drawn = rng.integers(0, len(score), len(score))
        # A player absent from a resample has no rating in it (NaN), rather than the
        # prior's made-up one, and is left out of that resample's quantiles.
        tally = _tally(first[drawn], second[drawn], score[drawn], len(players))
        samples[b] = _centred_ratings(*tally, base, prior_games)
    tail = (1 - level) / 2
    low, high = np.nanquantile(samples, [tail, 1 - tail], axis=0)
    return {
        name: {
            "rating": float(point[i]),
            "low": float(low[i]),
            "high": float(high[i]),
            "games": int(games[i].sum()),
        }
        for i, name in enumerate(players)
    }
