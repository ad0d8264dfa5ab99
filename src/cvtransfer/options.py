"""Options: how a setting is declared, by the Config or by the plug-in that owns it.

A plug-in (task, strategy, loss term, scorer) that has settings declares them as a small dataclass
of :func:`opt` fields and names it in its ``options`` class attribute::

    @dataclass
    class JANOptions:
        jan_sigma: float = opt(0.92, "jan: bandwidth of the kernel on the predictions.", ADAPT, 0.0)

Registering the plug-in (``Registry.register``) records the dataclass here; ``cvtransfer.config``
adds its fields to the Config, so the CLI, YAML files and the Python API offer them without edits
anywhere else. This module imports nothing of cvtransfer: plug-ins import it at load time.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from typing import Any

DATA, MODEL, STRATEGY, OPTIM, TRAIN, OUTPUT = "Data", "Model", "Strategy", "Optimisation", "Training", "Output"
CHOOSE = "Choosing"  # rank and auto: candidate backbones, budget, the rules of the automatic choice
ADAPT = "Adaptation"  # cvtransfer adapt
FEWSHOT = "Few-shot"  # cvtransfer fewshot, fewshot-eval
# The groups every training command (fit, lr-find, ...) exposes; a command adds its own group to them.
TRAINING_GROUPS = (DATA, MODEL, STRATEGY, OPTIM, TRAIN, OUTPUT)


def opt(default: Any, help: str, group: str, minimum: float | None = None, maximum: float | None = None,
        repeat: bool = False) -> Any:
    """A setting with its CLI help text, help panel and optional numeric bounds.

    ``repeat``: a comma-separated string that the CLI also takes as a repeated option
    (``--loss dann --loss mcc:0.1``) and YAML as a list.
    """
    meta = {"help": help, "group": group, "min": minimum, "max": maximum, "repeat": repeat}
    return field(default=default, metadata=meta)


# (kind, plug-in name, options dataclass), in registration order.
_DECLARED: list[tuple[str, str, type]] = []


def declare(kind: str, name: str, options: type) -> None:
    """Record the options dataclass of plug-in ``name`` of ``kind`` (called by ``Registry.register``)."""
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"{kind} '{name}': options must be a dataclass of opt() fields, not {options!r}")
    _DECLARED.append((kind, name, options))


def declared() -> list[tuple[str, str, type]]:
    """Every (kind, name, options dataclass) recorded so far."""
    return list(_DECLARED)


def plugin_fields() -> list[tuple[str, Any, Any]]:
    """The fields the plug-ins add to the Config, as ``dataclasses.make_dataclass`` takes them.

    A name declared by two plug-ins must be declared identically (one setting shared by both).
    """
    seen: dict[str, tuple[str, Any, Any]] = {}
    owners: dict[str, str] = {}
    for kind, name, options in _DECLARED:
        hints = typing.get_type_hints(options)
        for f in dataclasses.fields(options):
            spec = (f.name, hints[f.name], field(default=f.default, metadata=dict(f.metadata)))
            if f.name in seen:
                if seen[f.name][2].default != f.default or seen[f.name][2].metadata != f.metadata:
                    raise TypeError(f"option {f.name} of {kind} '{name}' differs from the one of {owners[f.name]}")
                continue
            seen[f.name] = spec
            owners[f.name] = f"{kind} '{name}'"
    return list(seen.values())


def owner_of(option: str) -> list[tuple[str, str]]:
    """(kind, name) of the plug-ins that declare ``option`` ([] for the Config's own settings)."""
    return [(kind, name) for kind, name, options in _DECLARED
            if option in {f.name for f in dataclasses.fields(options)}]
