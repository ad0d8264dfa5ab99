"""LEEP (Nguyen et al., ICML 2020): log expected empirical prediction of the source model's soft labels."""

from __future__ import annotations

import numpy as np

from cvtransfer.scores.transferability.base import Array, check_inputs, check_probabilities, register_score


@register_score("leep", uses="source_probs")
def leep(source_probs: Array, labels: Array) -> float:
    r"""LEEP of the source model's class probabilities ``source_probs`` (N x Z) for target ``labels``.

    With theta(x_i) the source model's distribution over its Z classes, the empirical joint and
    conditional of target label y and source label z are

        P(y, z) = 1/N sum_{i: y_i = y} theta(x_i)_z,   P(y | z) = P(y, z) / sum_y' P(y', z),

    and LEEP = 1/N sum_i log( sum_z P(y_i | z) theta(x_i)_z ), the average log-likelihood of the
    "expected empirical predictor". At most 0; higher transfers better. Nguyen, Hassner, Seeger,
    Archambeau, "LEEP: A New Measure to Evaluate Transferability of Learned Representations", ICML 2020.
    """
    probs, y = check_inputs(source_probs, labels, what="source_probs")
    return float(np.mean(np.log(expected_empirical_prediction(check_probabilities(probs), y))))


def expected_empirical_prediction(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """sum_z P(y_i | z) theta(x_i)_z for every sample i (labels 0..C-1)."""
    n = len(labels)
    joint = np.zeros((int(labels.max()) + 1, probs.shape[1]))
    np.add.at(joint, labels, probs / n)
    marginal = joint.sum(axis=0)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    predicted = np.einsum("iz,iz->i", probs, conditional[labels])
    return np.maximum(predicted, np.finfo(np.float64).tiny)
