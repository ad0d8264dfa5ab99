"""Transferability scores: hand-computed cases, a direct evidence computation, and the properties the papers claim."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize

from cvtransfer.errors import DataError
from cvtransfer.scores import SCORERS, ScoreInputs
from cvtransfer.scores.transferability import SCORES, hscore, leep, logme, nce, nleep
from cvtransfer.scores.transferability.logme import logme_fit


def blobs(n_per_class: int = 30, classes: int = 3, dims: int = 8, spread: float = 0.3, seed: int = 0
          ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around random class centres: features whose labels are (nearly) linearly separable."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dims)) * 2
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + spread * rng.normal(size=(len(labels), dims)), labels


def direct_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) of Bayesian linear regression, from dense matrices (no eigen-tricks)."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    return float(d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
                 - beta / 2 * np.sum((f @ m - y) ** 2) - alpha / 2 * m @ m - np.linalg.slogdet(a)[1] / 2)


def reference_11_steps(f: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(alpha, beta) after the public LogME code's loop: MacKay updates from 1, 1, stopped after 11 steps."""
    s, v = np.linalg.eigh(f.T @ f)
    s, tmp = np.maximum(s, 0), v.T @ (f.T @ y)
    alpha = beta = 1.0
    lam = alpha / beta
    for _ in range(11):
        gamma = (s / (s + lam)).sum()
        m = v @ (tmp * beta / (alpha + beta * s))
        alpha, beta = gamma / (m @ m), (len(y) - gamma) / np.sum((y - f @ m) ** 2)
        new_lam = alpha / beta
        if abs(new_lam - lam) / lam < 0.01:
            break
        lam = new_lam
    return alpha, beta


@pytest.mark.parametrize("shape", [(60, 5), (20, 100)])  # N >> D and D >> N
def test_logme_is_the_maximum_of_the_directly_computed_evidence(shape: tuple[int, int]) -> None:
    n, d = shape
    rng = np.random.default_rng(1)
    f = rng.normal(size=(n, d))
    labels = np.arange(n) % 2
    f[:, :3] += 2.0 * labels[:, None]  # the features explain the labels: the maximum is inside, not at alpha -> inf
    fit = logme_fit(f, labels)
    onehot = np.eye(2)[labels]
    for c in range(2):
        alpha, beta = fit.alpha[c], fit.beta[c]
        assert fit.evidence[c] == pytest.approx(direct_evidence(f, onehot[:, c], alpha, beta), rel=1e-9)
        best = optimize.minimize(lambda p, c=c: -direct_evidence(f, onehot[:, c], *np.exp(p)),
                                 np.log([alpha, beta]) + 0.5, method="Nelder-Mead",
                                 options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 5000})
        assert -best.fun <= fit.evidence[c] + 1e-7  # nothing beats it
        assert np.exp(best.x) == pytest.approx([alpha, beta], rel=1e-3)  # and it is where the optimiser ends
    assert logme(f, labels) == pytest.approx(fit.evidence.mean() / n)


def test_logme_converges_where_the_11_step_reference_stops_early() -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(20, 100))  # D > N
    labels = np.arange(20) % 2
    f[:, :3] += 2.0 * labels[:, None]
    y = np.eye(2)[labels][:, 0]
    ours = logme_fit(f, labels)
    alpha, beta = reference_11_steps(f, y)
    theirs = direct_evidence(f, y, alpha, beta)
    assert ours.evidence[0] > theirs + 0.5  # the reference's stopping point is far from the maximum


def test_logme_of_a_hand_computable_case() -> None:
    # One feature equal to the one-hot target column: for class 1 the evidence is that of y = w f with
    # f = y; evaluate the direct formula over a fine grid of (alpha, beta) and compare maxima.
    labels = np.array([0, 1, 1, 0, 1, 0])
    f = np.stack([labels, 1 - labels], axis=1).astype(float) + 0.1 * np.array([1, -1, 1, -1, 1, -1])[:, None]
    fit = logme_fit(f, labels)
    grid = np.exp(np.linspace(-6, 8, 141))
    for c in range(2):
        y = np.eye(2)[labels][:, c]
        brute = max(direct_evidence(f, y, a, b) for a in grid for b in grid)
        assert brute <= fit.evidence[c] + 1e-9
        assert fit.evidence[c] - brute < 0.05  # the grid's resolution


def test_logme_invariances() -> None:
    f, y = blobs(dims=6)
    base = logme(f, y)
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(6, 6)))
    assert logme(7.5 * f, y) == pytest.approx(base, rel=1e-8)  # feature scale
    assert logme(f @ q, y) == pytest.approx(base, rel=1e-8)  # rotation of the feature space
    assert logme(np.hstack([f, np.zeros((len(f), 4))]), y) == pytest.approx(base, rel=1e-8)  # dead units
    assert logme(torch.from_numpy(f).float(), torch.from_numpy(y)) == pytest.approx(base, rel=1e-5)


def test_leep_by_hand() -> None:
    # theta: two source classes. P(y, z) = 1/4 sum theta over samples of y:
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9], [0.3, 0.7]])
    labels = np.array([0, 0, 1, 1])
    joint = np.array([[1.4, 0.6], [0.4, 1.6]]) / 4  # rows y, columns z
    conditional = joint / joint.sum(axis=0)  # P(y | z)
    expected = np.mean([np.log(probs[i] @ conditional[labels[i]]) for i in range(4)])
    assert leep(probs, labels) == pytest.approx(expected, rel=1e-12)
    # a source class that determines the target: LEEP = log 1 = 0, its maximum
    assert leep(np.eye(2)[labels], labels) == pytest.approx(0.0, abs=1e-12)


def test_nce_by_hand() -> None:
    labels = np.array([0, 0, 1, 1])
    assert nce(np.eye(2)[labels], labels) == pytest.approx(0.0)  # Z determines Y
    independent = np.eye(2)[[0, 1, 0, 1]]
    assert nce(independent, labels) == pytest.approx(-math.log(2))  # -H(Y) for independent Z
    # z = [0, 0, 0, 1]: P(y=0|z=0) = 2/3, P(y=1|z=0) = 1/3, z=1 pure
    assert nce(np.eye(2)[[0, 0, 0, 1]], labels) == pytest.approx(0.5 * math.log(2 / 3) + 0.25 * math.log(1 / 3))


def test_hscore_by_hand_and_invariance() -> None:
    # f = [0, 0, 2, 2], classes [0, 0, 1, 1]: total variance 1, between-class variance 1 -> H = 1
    f, labels = np.array([[0.0], [0.0], [2.0], [2.0]]), np.array([0, 0, 1, 1])
    assert hscore(f, labels, shrinkage=False) == pytest.approx(1.0)
    x, y = blobs(dims=4)
    a = np.random.default_rng(5).normal(size=(4, 4))  # any invertible map
    assert hscore(x @ a + 3.0, y, shrinkage=False) == pytest.approx(hscore(x, y, shrinkage=False), rel=1e-6)


def test_shrinkage_hscore_still_ranks_where_the_plain_one_cannot() -> None:
    f, y = blobs(n_per_class=5, classes=2, dims=40, spread=2.0)  # D > N
    shuffled = np.random.default_rng(0).permutation(y)
    # the pseudo-inverse of a rank-deficient covariance explains any labelling perfectly: H = C - 1 for both
    assert hscore(f, y, shrinkage=False) == pytest.approx(1.0, rel=1e-6)
    assert hscore(f, shuffled, shrinkage=False) == pytest.approx(1.0, rel=1e-6)
    assert hscore(f, y) > hscore(f, shuffled) + 0.1


@pytest.mark.parametrize("name", ["logme", "hscore", "nleep"])
def test_feature_scores_prefer_separable_labels_to_shuffled_ones(name: str) -> None:
    f, y = blobs()
    shuffled = np.random.default_rng(1).permutation(y)
    scorer = SCORES.get(name)
    assert scorer(ScoreInputs(features=f, labels=y)) > scorer(ScoreInputs(features=f, labels=shuffled))


@pytest.mark.parametrize("name", ["leep", "nce"])
def test_source_scores_prefer_related_source_classes(name: str) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    related = np.eye(5)[y + rng.integers(0, 2, size=len(y))] * 0.8 + 0.04  # source class y or y+1
    unrelated = np.eye(5)[rng.integers(0, 5, size=len(y))] * 0.8 + 0.04
    scorer = SCORES.get(name)
    assert scorer(ScoreInputs(source_probs=related, labels=y)) > scorer(ScoreInputs(source_probs=unrelated, labels=y))


def test_nleep_is_deterministic() -> None:
    f, y = blobs(seed=2)
    assert nleep(f, y) == nleep(f, y)


def test_bad_inputs_are_one_line_errors() -> None:
    f, y = blobs()
    with pytest.raises(DataError, match="one label per row"):
        logme(f, y[:-1])
    with pytest.raises(DataError, match="two classes"):
        logme(f, np.zeros(len(f)))
    with pytest.raises(DataError, match="matrix"):
        hscore(f[:, 0], y)
    with pytest.raises(DataError, match="softmax"):
        leep(f[:, :3], y)
    bad = f.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        logme(bad, y)


def test_registry_order_and_inputs() -> None:
    assert SCORES.names() == ["logme", "leep", "nce", "hscore", "nleep"]
    assert {n for n in SCORES.names() if SCORES.get(n).uses == "source_probs"} == {"leep", "nce"}
    kinds = {kind: [n for n, s in SCORERS.items() if s.kind == kind] for kind in ("selection", "shift")}
    assert kinds == {"selection": ["snd", "entropy", "dev"], "shift": ["mmd2", "proxy_a_distance", "wasserstein"]}
