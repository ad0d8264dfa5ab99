"""BitFit: fine-tune only the bias terms of the backbone (and the head).

Ben Zaken, Ravfogel & Goldberg, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models", ACL 2022. Every weight matrix stays at its pretrained
value; the biases (about 0.1% of a ViT's parameters) and the new head train. Normalisation layers
keep updating their running statistics, as in the paper.
"""

from __future__ import annotations

from cvtransfer.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("bitfit")
class BitFit(Strategy):
    """Backbone biases and the head train; every other backbone parameter is frozen."""

    name = "bitfit"

    def setup(self) -> None:
        for name, param in self.model.backbone.named_parameters():
            param.requires_grad_(name.endswith(".bias"))
