"""NCE (Tran et al., ICCV 2019): negative conditional entropy of target labels given hard source labels."""

from __future__ import annotations

import numpy as np

from cvtransfer.scores.transferability.base import Array, check_inputs, check_probabilities, register_score


@register_score("nce", uses="source_probs")
def nce(source_probs: Array, labels: Array) -> float:
    r"""NCE of the source model's predictions ``source_probs`` (N x Z) for target ``labels``.

    With z_i = argmax theta(x_i) the source model's hard label and P the empirical joint of (y, z),

        NCE = -H(Y | Z) = sum_{y, z} P(y, z) log P(y | z).

    At most 0 (reached when the source label determines the target label); higher transfers better.
    Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised Classification Tasks", ICCV 2019.
    """
    probs, y = check_inputs(source_probs, labels, what="source_probs")
    z = check_probabilities(probs).argmax(axis=1)
    joint = np.zeros((int(y.max()) + 1, probs.shape[1]))
    np.add.at(joint, (y, z), 1.0 / len(y))
    marginal = joint.sum(axis=0, keepdims=True)
    seen = joint > 0
    return float(np.sum(joint[seen] * np.log((joint / np.where(marginal > 0, marginal, 1.0))[seen])))
