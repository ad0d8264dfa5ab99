"""L2-SP: fine-tune everything while staying close to the starting (pretrained) weights.

The penalty is the ``l2sp`` loss term (``losses/l2sp.py``, Li et al. ICML 2018); this strategy
trains every parameter without weight decay, which the penalty replaces, and asks for the term.
"""

from __future__ import annotations

from typing import Any

from cvtransfer.strategies.base import STRATEGIES, Strategy, layerwise_param_groups


@STRATEGIES.register("l2sp")
class L2SP(Strategy):
    """Full fine-tuning regularised towards the starting weights."""

    name = "l2sp"
    terms = (("l2sp", 1.0),)  # the penalty, losses/l2sp.py

    def param_groups(self) -> list[dict[str, Any]]:
        return layerwise_param_groups(self.model, self.config, weight_decay=0.0)
