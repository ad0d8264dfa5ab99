"""What a scorer is: a number computed from features (and labels or predictions), without training.

Every score of cvtransfer is a :class:`Scorer` in one registry, ``SCORERS``, with one interface:
``scorer(ScoreInputs(...)) -> float``, the direction in which it improves, and the inputs it
reads. Three kinds share it:

- ``transferability``: how well a backbone should transfer to a labelled target (logme, leep,
  nce, hscore, nleep), from its frozen features or its source classifier's probabilities;
- ``selection``: which epoch of an adaptation run to keep without target labels (snd, entropy, dev);
- ``shift``: how far apart two domains are (mmd2, proxy_a_distance, wasserstein).

``ranking.csv``, the adaptation engine's ``val_<name>`` columns and shift.json list every scorer
of their kind, so a new score is one file that registers one :class:`Scorer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Literal

from cvtransfer.registry import Registry

Kind = Literal["transferability", "selection", "shift"]


@dataclass
class ScoreInputs:
    """Everything a scorer may read; each scorer names the fields it needs in ``reads``."""

    features: Any = None  # (n, d) frozen features of the labelled target samples
    labels: Any = None  # (n,) their labels
    source_probs: Any = None  # (n, source classes) the source classifier's probabilities
    target_probs: Any = None  # (n, C) softmax outputs on unlabelled target samples
    target_features: Any = None  # (n, d) features of target samples
    source_features: Any = None  # (m, d) features of source samples
    source_losses: Any = None  # (m,) per-sample loss on labelled source validation samples
    seed: int = 0
    max_samples: int = 1000  # shift measures subsample each domain to this many rows

    def has(self, *names: str) -> bool:
        return all(getattr(self, name) is not None for name in names)


@dataclass(frozen=True)
class Scorer:
    """A registered score: ``compute(inputs)``, the better direction, and the inputs it reads."""

    name: str
    kind: Kind
    compute: Callable[[ScoreInputs], float]
    mode: Literal["max", "min"] = "max"
    reads: tuple[str, ...] = ()

    def __call__(self, inputs: ScoreInputs) -> float:
        missing = [name for name in self.reads if getattr(inputs, name) is None]
        if missing:
            raise ValueError(f"score {self.name} reads {', '.join(missing)}, which the inputs lack")
        return float(self.compute(inputs))

    @property
    def uses(self) -> str:
        """The first input it reads (transferability: "features" or "source_probs")."""
        return self.reads[0] if self.reads else ""


SCORERS: Registry[Scorer] = Registry("score")


def register(scorer: Scorer) -> Scorer:
    """Add ``scorer`` to ``SCORERS`` (its name must be new across every kind)."""
    unknown = set(scorer.reads) - {f.name for f in fields(ScoreInputs)}
    if unknown:
        raise TypeError(f"score {scorer.name} reads {', '.join(sorted(unknown))}, which ScoreInputs does not have")
    return SCORERS.register(scorer.name)(scorer)


class ScorersOfKind:
    """The registered scorers of one kind, in registration order (a read-only view of ``SCORERS``)."""

    def __init__(self, kind: Kind, label: str) -> None:
        self.kind = kind
        self._label = label  # how errors name them: "transferability score", ...

    def names(self) -> list[str]:
        return [name for name, scorer in SCORERS.items() if scorer.kind == self.kind]

    def get(self, name: str) -> Scorer:
        from cvtransfer.errors import unknown_name

        scorer = SCORERS.get(name) if name in SCORERS else None
        if scorer is None or scorer.kind != self.kind:
            raise unknown_name(self._label, name, self.names())
        return scorer

    def compute(self, inputs: ScoreInputs) -> dict[str, float]:
        """Every scorer of this kind on ``inputs``; NaN for those whose inputs are missing."""
        return {name: self.get(name)(inputs) if inputs.has(*self.get(name).reads) else float("nan")
                for name in self.names()}

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.names()
