"""How far apart two domains are, measured on features: MMD, proxy A-distance, Wasserstein.

Plain functions of two feature matrices (source (m, d), target (n, d)); ``domain_shift`` returns
all three. Each works on a seeded subsample of at most ``max_samples`` rows per domain, since
they cost O(m n) memory or time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ot
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cvtransfer.losses.dan import gaussian_mmd2
from cvtransfer.scores.base import ScoreInputs, Scorer, ScorersOfKind, register

MAX_SAMPLES = 1000


def subsample(features: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """At most ``count`` rows of ``features``, chosen with a seeded generator."""
    if len(features) <= count:
        return features
    generator = torch.Generator().manual_seed(seed)
    return features[torch.randperm(len(features), generator=generator)[:count]]


def median_heuristic(x: torch.Tensor, y: torch.Tensor) -> float:
    """sigma^2 = median squared pairwise distance / 2 over the pooled sample (Gretton et al. 2012)."""
    joint = torch.cat([x, y]).double()
    distances = torch.cdist(joint, joint).pow(2)
    upper = distances[torch.triu_indices(len(joint), len(joint), offset=1).unbind()]
    return max(float(upper.median()) / 2, 1e-12)


def mmd(x: torch.Tensor, y: torch.Tensor, max_samples: int = MAX_SAMPLES, seed: int = 0) -> float:
    """Unbiased MMD^2 with a Gaussian kernel k(a, b) = exp(-||a - b||^2 / (2 sigma^2)), sigma by the median heuristic."""
    x, y = subsample(x, max_samples, seed).double(), subsample(y, max_samples, seed + 1).double()
    return float(gaussian_mmd2(x, y, [median_heuristic(x, y)], unbiased=True))


def proxy_a_distance(x: torch.Tensor, y: torch.Tensor, max_samples: int = MAX_SAMPLES, seed: int = 0) -> float:
    """2 (1 - 2 e), e the held-out error of a linear domain classifier (Ben-David et al. 2007; Ganin et al. 2016).

    Both domains are subsampled to the same size (chance error is then 0.5, distance 0); the
    classifier (standardised logistic regression) is fitted on half and tested on the other half.
    """
    count = min(len(x), len(y), max_samples)
    x, y = subsample(x, count, seed), subsample(y, count, seed + 1)
    data = torch.cat([x, y]).double().numpy()
    labels = np.r_[np.zeros(len(x)), np.ones(len(y))]
    fit_x, test_x, fit_y, test_y = train_test_split(data, labels, test_size=0.5, stratify=labels, random_state=seed)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(fit_x, fit_y)
    error = 1.0 - classifier.score(test_x, test_y)
    return 2.0 * (1.0 - 2.0 * error)


def wasserstein(x: torch.Tensor, y: torch.Tensor, max_samples: int = MAX_SAMPLES, seed: int = 0) -> float:
    """Exact 1-Wasserstein (earth mover's) distance with Euclidean cost, by POT's network simplex."""
    a, b = subsample(x, max_samples, seed).double().numpy(), subsample(y, max_samples, seed + 1).double().numpy()
    cost = ot.dist(a, b, metric="euclidean")
    return float(ot.emd2(ot.unif(len(a)), ot.unif(len(b)), cost, numItermax=1_000_000))


SHIFT_MEASURES = ScorersOfKind("shift", "shift measure")
_DOMAINS = ("source_features", "target_features")
register(Scorer("mmd2", "shift", lambda s: mmd(s.source_features, s.target_features, s.max_samples, s.seed), "min",
                _DOMAINS))
register(Scorer("proxy_a_distance", "shift",
                lambda s: proxy_a_distance(s.source_features, s.target_features, s.max_samples, s.seed), "min",
                _DOMAINS))
register(Scorer("wasserstein", "shift",
                lambda s: wasserstein(s.source_features, s.target_features, s.max_samples, s.seed), "min", _DOMAINS))


def domain_shift(source: torch.Tensor, target: torch.Tensor, max_samples: int = MAX_SAMPLES,
                 seed: int = 0) -> dict[str, Any]:
    """Every shift measure (MMD^2, proxy A-distance, Wasserstein-1) between ``source`` and ``target`` features."""
    if len(source) < 4 or len(target) < 4:
        raise ValueError("domain shift needs at least 4 samples per domain")
    source, target = source.float(), target.float()
    inputs = ScoreInputs(source_features=source, target_features=target, seed=seed, max_samples=max_samples)
    return {
        **SHIFT_MEASURES.compute(inputs),
        "source_samples": min(len(source), max_samples),
        "target_samples": min(len(target), max_samples),
        "feature_dim": int(source.shape[1]),
    }
