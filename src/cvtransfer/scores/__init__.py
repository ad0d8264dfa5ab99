"""Scorers: numbers computed from features (and labels or predictions) without training.

One interface (:class:`Scorer`, ``scorer(ScoreInputs(...)) -> float``) and one registry
(``SCORERS``) for the three kinds: transferability (``transferability/``), unsupervised selection
(``selection.py``) and domain shift (``shift.py``). Every module here is imported (and so
registered): a new score is one new file.
"""

from cvtransfer.registry import import_modules
from cvtransfer.scores.base import SCORERS, ScoreInputs, Scorer, ScorersOfKind, register

import_modules(__name__, __path__, first=("base", "transferability", "selection", "shift"))

__all__ = ["SCORERS", "ScoreInputs", "Scorer", "ScorersOfKind", "register"]
