"""Unsupervised validation scores: pick the epoch (or the trade-off) without target labels.

Each score is a plain function of what one pass over the data gives (target predictions, and for
DEV source validation features and losses), registered as a :class:`Scorer` of kind ``selection``
(``SELECTION_SCORES`` lists them) with the direction in which it improves. The adaptation engine computes every registered score each epoch
(``val_<name>`` in history.csv); ``--select-by NAME`` keeps the checkpoint that scores best.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cvtransfer.scores.base import ScoreInputs, Scorer, ScorersOfKind, register

__all__ = ["SELECTION_SCORES", "ScoreInputs", "compute_scores", "deep_embedded_validation", "prediction_entropy",
           "soft_neighborhood_density"]

SND_TEMPERATURE = 0.05


SELECTION_SCORES = ScorersOfKind("selection", "selection score")


def soft_neighborhood_density(probs: torch.Tensor, temperature: float = SND_TEMPERATURE,
                              chunk: int = 1024) -> float:
    """SND (Saito, Kim, Teterwak, Sclaroff, Darrell & Saenko, ICCV 2021); higher is better.

    With L2-normalised softmax outputs p_i: S_ij = <p_i, p_j> / tau for j != i,
    P_ij = softmax_j(S_ij), and SND = mean_i H(P_i), the entropy of each sample's soft
    neighbourhood: high when target samples sit in dense clusters.
    """
    normed = torch.nn.functional.normalize(probs.double(), dim=1)
    total = 0.0
    for start in range(0, len(normed), chunk):  # chunks keep memory at chunk x n
        rows = normed[start:start + chunk] @ normed.T / temperature
        index = torch.arange(start, start + len(rows))
        rows[torch.arange(len(rows)), index] = float("-inf")
        neighbours = rows.softmax(dim=1)
        total += float(-(neighbours * neighbours.clamp(min=1e-30).log()).sum())
    return total / len(normed)


def prediction_entropy(probs: torch.Tensor) -> float:
    """Mean entropy (nats) of the target predictions (Morerio, Cavazza & Murino, ICLR 2018); lower is better."""
    probs = probs.double()
    return float(-(probs * probs.clamp(min=1e-30).log()).sum(dim=1).mean())


def deep_embedded_validation(source_features: torch.Tensor, source_losses: torch.Tensor,
                             target_features: torch.Tensor, seed: int = 0) -> float:
    """DEV (You, Wang, Long & Jordan, ICML 2019); lower is better.

    Density ratios w_i = p_t(x_i) / p_s(x_i) of the source validation samples come from a domain
    classifier on features; the importance-weighted validation loss, with w as control variate:

        DEV = mean(w l) + eta * mean(w) - eta,   eta = -Cov(w l, w) / Var(w)

    The paper trains the domain classifier on source training features; here it is a logistic
    regression on source validation vs target features, cross-fitted (3 folds) so that no sample's
    ratio comes from a classifier that saw it: no extra pass over the training set.
    """
    x = torch.cat([source_features, target_features]).double().numpy()
    y = np.r_[np.zeros(len(source_features)), np.ones(len(target_features))]
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=seed)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=1.0))
    p_target = cross_val_predict(classifier, x, y, cv=folds, method="predict_proba")[: len(source_features), 1]
    p_target = np.clip(p_target, 1e-6, 1 - 1e-6)
    weights = len(source_features) / len(target_features) * p_target / (1 - p_target)
    weighted = weights * source_losses.double().numpy()
    variance = weights.var(ddof=1)
    eta = -np.cov(weighted, weights)[0, 1] / variance if variance > 0 else 0.0
    return float(weighted.mean() + eta * weights.mean() - eta)


register(Scorer("snd", "selection", lambda s: soft_neighborhood_density(s.target_probs), "max", ("target_probs",)))
register(Scorer("entropy", "selection", lambda s: prediction_entropy(s.target_probs), "min", ("target_probs",)))
register(Scorer("dev", "selection",
                lambda s: deep_embedded_validation(s.source_features, s.source_losses, s.target_features, s.seed),
                "min", ("source_features", "source_losses", "target_features")))


def compute_scores(inputs: ScoreInputs) -> dict[str, float]:
    """Every registered selection score on ``inputs``."""
    return SELECTION_SCORES.compute(inputs)
