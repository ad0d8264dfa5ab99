"""Loads every plug-in package so that each registers itself (and the options it declares).

``cvtransfer.config`` imports this module first: the Config's fields include the plug-ins'
options, so none of the plug-in modules may import ``cvtransfer.config`` at run time (only under
``TYPE_CHECKING``); ``config.py`` checks that this import finished.
"""

from cvtransfer import losses, scores, strategies, tasks  # noqa: F401  (registration)
from cvtransfer.scores import selection, transferability  # noqa: F401  (registration)

LOADED = True
