"""H-score (Bao et al., ICIP 2019), by default with the Ledoit-Wolf shrinkage of Ibrahim et al. (2022)."""

from __future__ import annotations

import numpy as np
from sklearn.covariance import LedoitWolf

from cvtransfer.scores.transferability.base import Array, check_inputs, register_score


@register_score("hscore")
def hscore(features: Array, labels: Array, shrinkage: bool = True) -> float:
    r"""H-score of ``features`` (N x D) for ``labels`` (N,); higher transfers better.

        H(f) = tr( cov(f)^-1 cov(E[f | y]) ),

    the features' between-class covariance relative to their total covariance (Bao, Li, Huang, Yang,
    Wang, Kang, "An Information-Theoretic Approach to Transferability in Task Transfer Learning",
    ICIP 2019). ``cov(f)^-1`` is a pseudo-inverse, unstable when N is not much larger than D; with
    ``shrinkage`` (the default) cov(f) is the Ledoit-Wolf estimate (1 - a) cov(f) + a mu I, whose
    coefficient a goes to 0 as N grows, and the score is tr( cov_a(f)^-1 (1 - a) cov(E[f | y]) )
    (Ibrahim, Ponomareva, Sebastian, "Newer is not always better: Rethinking transferability metrics,
    their peculiarities, stability and performance", ECML-PKDD 2022).
    """
    f, y = check_inputs(features, labels)
    f = f - f.mean(axis=0)
    class_means = np.zeros((int(y.max()) + 1, f.shape[1]))
    np.add.at(class_means, y, f)
    class_means /= np.bincount(y)[:, None]
    between = np.cov(class_means[y], rowvar=False, bias=True).reshape(f.shape[1], f.shape[1])
    if shrinkage:
        estimator = LedoitWolf(assume_centered=True).fit(f)
        total, between = estimator.covariance_, (1.0 - estimator.shrinkage_) * between
    else:
        total = np.cov(f, rowvar=False, bias=True).reshape(f.shape[1], f.shape[1])
    return float(np.trace(np.linalg.pinv(total, rcond=1e-15, hermitian=True) @ between))
