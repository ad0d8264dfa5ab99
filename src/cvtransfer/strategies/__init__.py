"""Fine-tuning strategies, one module each, registered by name in ``STRATEGIES``."""

from cvtransfer.strategies import full, gradual, l2sp, linear, partial  # noqa: F401  (registration)
from cvtransfer.strategies.base import STRATEGIES, Strategy, get_strategy

__all__ = ["STRATEGIES", "Strategy", "get_strategy"]
