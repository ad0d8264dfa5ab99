"""Tasks: what is predicted and how it is judged, one module each, registered in ``TASKS``.

Every module of this package is imported (and so registered) here: a new task is one new file.
"""

from cvtransfer.registry import import_modules
from cvtransfer.tasks.base import TASKS, Task, get_task

import_modules(__name__, __path__, first=("base", "classification"))

__all__ = ["TASKS", "Task", "get_task"]
