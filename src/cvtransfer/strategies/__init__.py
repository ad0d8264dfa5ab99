"""Fine-tuning strategies, one module each, registered by name in ``STRATEGIES``.

Every module of this package is imported (and so registered) here: a new strategy is one new file.
"""

from cvtransfer.registry import import_modules
from cvtransfer.strategies.base import STRATEGIES, Strategy, get_strategy

import_modules(__name__, __path__, first=("base", "linear", "partial", "full", "gradual", "l2sp"))

__all__ = ["STRATEGIES", "Strategy", "get_strategy"]
