"""Loss terms: everything added to the task loss, one module per term, registered in ``LOSSES``.

Every module of this package is imported (and so registered) here: a new term is one new file.
"""

from cvtransfer.losses.base import (
    LOSSES,
    DomainLoss,
    LossBatch,
    LossTerm,
    LossTerms,
    adaptation_methods,
    addable,
    build_loss_terms,
    parse_loss_spec,
)
from cvtransfer.registry import import_modules

# The domain-adaptation methods in the order the help lists them, then every other module.
import_modules(__name__, __path__, first=("base", "dan", "coral", "dann", "cdan", "adda", "mcc"))

__all__ = ["LOSSES", "DomainLoss", "LossBatch", "LossTerm", "LossTerms", "adaptation_methods", "addable",
           "build_loss_terms", "parse_loss_spec"]
