"""Full fine-tuning: every parameter trains; ``--layer-decay`` gives earlier groups smaller LRs."""

from cvtransfer.strategies.base import STRATEGIES, Strategy


@STRATEGIES.register("full")
class FullFineTuning(Strategy):
    """Everything trains (discriminative LRs through ``layer_decay`` and ``head_lr_mult``)."""

    name = "full"
