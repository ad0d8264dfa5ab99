"""NLEEP (Li et al., CVPR 2021): LEEP with a Gaussian mixture on the features in place of the source head."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from cvtransfer.scores.transferability.base import Array, check_inputs, register_score
from cvtransfer.scores.transferability.leep import expected_empirical_prediction

COMPONENTS_PER_CLASS = 5
KEPT_VARIANCE = 0.8


@register_score("nleep")
def nleep(features: Array, labels: Array, seed: int = 0) -> float:
    r"""NLEEP of ``features`` (N x D) for ``labels`` (N,); higher transfers better.

    The features are reduced by PCA to the components keeping 80% of the variance, a Gaussian
    mixture of v x C components (v = 5, C target classes; at most N/2) is fitted on them, and its
    posteriors p(z | x_i) replace the source model's soft labels in LEEP:

        NLEEP = 1/N sum_i log( sum_z P(y_i | z) p(z | x_i) ),  P(y | z) from the empirical joint.

    Features are centred and scaled by their overall standard deviation first (the score does not
    depend on the features' scale). It needs no source classifier, so it scores any backbone (Li, Jia, Zhang, Zhao, Zhu, Ma, Wang,
    Gong, "Ranking Neural Checkpoints", CVPR 2021). Deterministic for a given ``seed``.
    """
    f, y = check_inputs(features, labels)
    f = f - f.mean(axis=0)
    scale = f.std()
    if scale == 0:  # constant features carry no information: every sample in one component
        return float(np.mean(np.log(expected_empirical_prediction(np.ones((len(y), 1)), y))))
    f = f / scale  # the mixture's covariance floor is then relative, and the score scale-invariant
    reduced = PCA(n_components=KEPT_VARIANCE, svd_solver="full").fit_transform(f) if f.shape[1] > 1 else f
    components = max(2, min(COMPONENTS_PER_CLASS * (int(y.max()) + 1), len(y) // 2))
    mixture = GaussianMixture(components, covariance_type="full", reg_covar=1e-4, random_state=seed)
    posteriors = mixture.fit(reduced).predict_proba(reduced)
    return float(np.mean(np.log(expected_empirical_prediction(posteriors, y))))
