"""Transferability scores: how well a backbone should transfer to a labelled target, without training.

Each score is a plain function on arrays, registered in ``SCORES`` by name:
``logme(features, labels)``, ``hscore(features, labels)``, ``nleep(features, labels)`` read the
backbone's features; ``leep(source_probs, labels)`` and ``nce(source_probs, labels)`` read the source
model's class probabilities. A new score is one file with ``@register_score("name")``; the ranking,
its CSV and the contract test pick it up.
"""

# The import order is the registration order, which is the column order of ranking.csv: not sorted.
# isort: off
from cvtransfer.scores.transferability.base import SCORES, Score, register_score
from cvtransfer.scores.transferability.logme import logme
from cvtransfer.scores.transferability.leep import leep
from cvtransfer.scores.transferability.nce import nce
from cvtransfer.scores.transferability.hscore import hscore
from cvtransfer.scores.transferability.nleep import nleep
from cvtransfer.registry import import_modules

# isort: on
import_modules(__name__, __path__, first=("base", "logme", "leep", "nce", "hscore", "nleep"))  # and any new one

__all__ = ["SCORES", "Score", "hscore", "leep", "logme", "nce", "nleep", "register_score"]
