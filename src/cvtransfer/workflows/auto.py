"""``cvtransfer auto``: choose the backbone and the strategy from the data, train, and check the transfer paid.

    rank the candidates -> best backbone -> from-scratch baseline + linear probe of it
    -> relatedness (probe vs scratch, score vs the same backbone at random init) and data size
    -> strategy by the seeds' rules -> train it -> negative transfer if it does not beat the baseline

Every decision and its reason goes to RUN_DIR/decisions.md (and auto.json); the sub-runs
``transfer/``, ``scratch/`` and ``probe/`` are ordinary run folders. Decisions use the validation
split only; the test split, when there is one, is only reported.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cvtransfer.config import Config
from cvtransfer.data.folders import DatasetSplits, discover
from cvtransfer.data.loaders import default_workers
from cvtransfer.engine.commands import fit_run
from cvtransfer.engine.devices import pick_device
from cvtransfer.errors import ConfigError, WeightsError
from cvtransfer.io import atomic_write_text, write_json
from cvtransfer.run import Run, predict_probs
from cvtransfer.scores.transferability.base import SCORES
from cvtransfer.workflows.rank import (
    Candidate,
    CandidateScores,
    Ranking,
    compute_scores,
    extract,
    parse_candidates,
    probe,
    rank_backbones,
    split_list,
)

log = logging.getLogger(__name__)

DECISIONS_FILE = "decisions.md"
SUMMARY_FILE = "auto.json"
CONFIG_FILE = "auto.yaml"  # not config.yaml: the folder itself is not a run


@dataclass(frozen=True)
class Budget:
    """Default candidates and the factor applied to ``--epochs`` for the transfer and baseline runs."""

    backbones: tuple[str, ...]
    epochs_factor: float


BUDGETS = {
    "fast": Budget(("resnet18", "mobilenetv3_large_100", "efficientnet_b0"), 0.5),
    "normal": Budget(("resnet18", "mobilenetv3_large_100", "efficientnet_b0", "resnet50", "convnext_tiny"), 1.0),
    "thorough": Budget(("resnet18", "mobilenetv3_large_100", "efficientnet_b0", "resnet50", "convnext_tiny",
                        "densenet121", "vit_small_patch16_224", "swin_tiny_patch4_window7_224"), 2.0),
}


@dataclass
class Decision:
    """One step of the automatic choice: what was decided and why."""

    step: str
    choice: str
    reason: str


@dataclass
class DataFacts:
    """The size of the target training set."""

    images: int
    classes: int
    per_class: float
    fewest: int

    @classmethod
    def of(cls, splits: DatasetSplits) -> DataFacts:
        counts = splits.counts("train").values()
        return cls(len(splits.train), len(splits.classes), len(splits.train) / len(splits.classes), min(counts))

    def size(self, config: Config) -> str:
        """tiny, small or large, by the thresholds of ``config``."""
        if self.per_class < config.tiny_per_class:
            return "tiny"
        if self.per_class < config.small_per_class or self.images < config.small_images:
            return "small"
        return "large"

    def describe(self, config: Config) -> str:
        return (f"{self.images} training images, {self.classes} classes, {self.per_class:.1f} per class on average "
                f"(fewest {self.fewest}): {self.size(config)} (tiny below {config.tiny_per_class} per class; small "
                f"below {config.small_per_class} per class or {config.small_images} images)")


@dataclass
class Relatedness:
    """How related the source is to the target, from what is measurable offline."""

    probe_accuracy: float  # frozen pretrained features + logistic regression, on val
    scratch_accuracy: float  # the same backbone trained from random weights, same budget, on val
    score_name: str
    score: float  # of the pretrained features
    random_score: float  # of the same backbone's features at random initialisation

    @property
    def tied(self) -> bool:
        """Neither measure separates pretrained from random: equal accuracies and equal scores."""
        return self.probe_accuracy == self.scratch_accuracy and _same(self.score, self.random_score)

    @property
    def similar(self) -> bool:
        """The frozen pretrained features beat training from scratch; on a tie, the score beats random features.

        Equal scores are a tie too, and a tie is not evidence of relatedness: dissimilar.
        """
        if self.probe_accuracy != self.scratch_accuracy:
            return self.probe_accuracy > self.scratch_accuracy
        return not self.tied and self.score > self.random_score

    def describe(self) -> str:
        text = (f"linear probe {self.probe_accuracy:.3f} vs from-scratch {self.scratch_accuracy:.3f} val accuracy; "
                f"{self.score_name} {self.score:.4g} pretrained vs {self.random_score:.4g} at random init")
        return text + ("; a tie on both: no evidence the pretrained features help, taken as dissimilar"
                       if self.tied else "")


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


RULES = {  # (data size, similar) -> strategy and the rule, after the seeds
    ("tiny", True): ("linear", "tiny and similar data: feature extraction, nothing of the backbone to overfit"),
    ("tiny", False): ("l2sp", "tiny but dissimilar data: the features must adapt, but with so few labels only "
                              "while held near the pretrained weights (L2-SP)"),
    ("small", True): ("linear", "small and similar data: feature extraction"),
    ("small", False): ("gradual", "small but dissimilar data: fine-tune gently, head first, then the backbone at "
                                  "a lower learning rate (gradual unfreezing)"),
    ("large", True): ("gradual", "more data, similar: fine-tune, head first, then the backbone (gradual)"),
    ("large", False): ("full", "more data, dissimilar: fine-tune the whole network"),
}


def choose_strategy(facts: DataFacts, related: Relatedness, config: Config) -> Decision:
    """The strategy for this data size and relatedness, with the rule that chose it."""
    strategy, rule = RULES[(facts.size(config), related.similar)]
    return Decision("strategy", strategy, rule)


@dataclass
class AutoResult:
    """What ``auto`` decided and measured; the runs are sub-folders of ``folder``."""

    folder: Path
    decisions: list[Decision]
    ranking: Ranking
    candidate: Candidate
    strategy: str
    val_accuracy: dict[str, float]  # transfer, scratch, probe
    test_accuracy: dict[str, float | None]
    negative_transfer: bool
    recommended: str  # the sub-run to keep: transfer, probe or scratch

    def run(self, name: str = "recommended") -> Run:
        """A sub-run: ``transfer``, ``scratch``, ``probe``, or the ``recommended`` one."""
        return Run(self.folder / (self.recommended if name == "recommended" else name))


def run_auto(config: Config) -> AutoResult:
    """Rank, choose, train, compare with a from-scratch baseline; write decisions.md into ``config.out``."""
    folder = Path(config.out) if config.out else Path("runs") / f"auto-{time.strftime('%Y%m%d-%H%M%S')}"
    if (folder / SUMMARY_FILE).exists():
        raise ConfigError(f"{folder} already holds an auto run: choose another --out")
    if config.data is None:
        raise ConfigError("no data given: pass DATA_DIR (or data= in the config)")
    if config.loss:
        raise ConfigError("auto chooses the strategy and the loss terms that go with it: leave out --loss "
                          "(or train the chosen backbone with cvtransfer fit --loss ...)")
    budget = BUDGETS[config.budget]
    backbones, decision = _candidates(config, budget)
    decisions = [decision]
    splits = discover(config.data, config.val_split, config.test_split, config.seed, config.max_image_pixels)
    if not splits.val:
        raise ConfigError("auto decides on validation images and there are none: use --val-split 0.2 or a val/ folder")
    folder.mkdir(parents=True, exist_ok=True)
    config.replace(out=str(folder)).save(folder / CONFIG_FILE)
    epochs = max(1, round(config.epochs * budget.epochs_factor))
    try:
        ranking = rank_backbones(config.replace(backbones=backbones, validate=False, out=str(folder)), splits=splits)
    except WeightsError as err:
        if config.backbones:
            raise
        raise WeightsError(f"{err} (auto's '{config.budget}' budget ranks {backbones} with --weights "
                           f"{config.weights}: give local files with --backbones A,B --weights A=PATH,B=PATH)") from err
    chosen = transfer_candidate(ranking)
    decisions.append(_backbone_decision(ranking, chosen))
    best = chosen.candidate
    facts = DataFacts.of(splits)
    decisions.append(Decision("data size", facts.size(config), facts.describe(config)))
    base = config.replace(backbone=best.backbone, weights=best.weights, epochs=epochs, backbones=None)
    log.info("auto: training the from-scratch baseline of %s (%d epochs)", best.backbone, epochs)
    runs = {"scratch": fit_run(base.replace(weights="none", strategy="full", out=str(folder / "scratch"))),
            "probe": probe(best, base, folder / "probe")}
    val = {name: val_accuracy(run, splits) for name, run in runs.items()}
    related = _relatedness(ranking, chosen, splits, config, val)
    decisions.append(Decision("relatedness", "similar" if related.similar else "dissimilar", related.describe()))
    decisions.append(choose_strategy(facts, related, config))
    strategy = decisions[-1].choice
    log.info("auto: training %s with %s (%d epochs)", best.name, strategy, epochs)
    head = "logistic" if strategy == "linear" else config.head
    cached = {"augment": "none", "mixup": 0.0, "cutmix": 0.0} if strategy == "linear" else {}  # cached features
    runs["transfer"] = fit_run(base.replace(strategy=strategy, head=head, out=str(folder / "transfer"), **cached))
    val["transfer"] = val_accuracy(runs["transfer"], splits)
    negative = val["transfer"] <= val["scratch"]
    guard, recommended = _guard_decisions(val, negative, strategy)
    decisions += guard
    result = AutoResult(folder, decisions, ranking, best, strategy, val,
                        {name: _test_accuracy(run) for name, run in runs.items()}, negative, recommended)
    write_outputs(result, config, facts, related)
    return result


def _candidates(config: Config, budget: Budget) -> tuple[str, Decision]:
    """The --backbones value to rank, and the decision naming the candidates."""
    backbones = ",".join(split_list(config.backbones) if config.backbones else budget.backbones)
    candidates = parse_candidates(backbones, config.weights)
    if all(is_random_init(c) for c in candidates):
        raise ConfigError("auto compares transfer from pretrained weights with training from scratch (which it runs "
                          "itself), but every candidate has --weights none: give pretrained weights (imagenet, a "
                          "file or a run folder), e.g. --weights NAME=PATH")
    names = ", ".join(c.name for c in candidates)
    source = "given with --backbones" if config.backbones else f"the default list of the '{config.budget}' budget"
    return backbones, Decision("candidates", names, f"{source}; weights: {config.weights}")


def is_random_init(candidate: Candidate) -> bool:
    """A candidate without pretrained weights: a from-scratch baseline, never a transfer."""
    return candidate.weights == "none"


def transfer_candidate(ranking: Ranking) -> CandidateScores:
    """The best-ranked candidate with pretrained weights (random-init candidates are baselines only)."""
    return next(row for row in ranking.rows if not is_random_init(row.candidate))


def _backbone_decision(ranking: Ranking, chosen: CandidateScores) -> Decision:
    name = ranking.rank_by
    pretrained = [row for row in ranking.rows if not is_random_init(row.candidate)]
    reason = f"highest {name} ({chosen.scores[name]:.4g}) of {len(pretrained)} pretrained candidates"
    if len(pretrained) > 1:
        second = pretrained[1]
        reason += f"; next: {second.candidate.name} ({second.scores[name]:.4g})"
    baselines = [row for row in ranking.rows if is_random_init(row.candidate)]
    if baselines:
        reason += ("; not considered (random init, a baseline, not a transfer): "
                   + ", ".join(f"{row.candidate.name} ({row.scores[name]:.4g})" for row in baselines))
    return Decision("backbone", chosen.candidate.name, reason)


def _relatedness(ranking: Ranking, chosen: CandidateScores, splits: DatasetSplits, config: Config,
                 val: dict[str, float]) -> Relatedness:
    """Probe vs scratch accuracy, and a feature score of the pretrained vs randomly initialised backbone."""
    name = ranking.rank_by if SCORES.get(ranking.rank_by).uses == "features" else "logme"
    best = chosen.candidate
    random_init = Candidate(f"{best.backbone}@none", best.backbone, "none")
    (features, labels), _, _ = extract(random_init, splits.train, len(splits.classes), config)
    random_score = compute_scores(features, labels, None)[name]
    return Relatedness(val["probe"], val["scratch"], name, chosen.scores[name], random_score)


def _guard_decisions(val: dict[str, float], negative: bool, strategy: str) -> tuple[list[Decision], str]:
    """The negative-transfer verdict (the chosen transfer vs scratch) and the sub-run to keep (best on val)."""
    compared = f"transfer ({strategy}) {val['transfer']:.3f} vs from scratch {val['scratch']:.3f} val accuracy"
    verdict = (Decision("negative transfer", "yes", f"{compared}: the pretrained weights did not help") if negative
               else Decision("negative transfer", "no", compared))
    # ties go to scratch (no pretrained weights needed), then to the chosen strategy (with linear, the
    # transfer run is the probe trained again from the cached features: same accuracy, same model)
    recommended = max(RECOMMEND_ORDER, key=lambda name: (val[name], -RECOMMEND_ORDER.index(name)))
    others = ", ".join(f"{name} {val[name]:.3f}" for name in RECOMMEND_ORDER if name != recommended)
    reason = f"best val accuracy ({val[recommended]:.3f}; {others}); ties go to scratch, then transfer"
    return [verdict, Decision("recommended model", f"{recommended}/", reason)], recommended


RECOMMEND_ORDER = ("scratch", "transfer", "probe")


def val_accuracy(run: Run, splits: DatasetSplits) -> float:
    """Accuracy of a run's model on the validation split."""
    config = run.config
    probs, labels = predict_probs(run.model, splits.val, run.preprocessing, config.batch_size,
                                  pick_device(config.accelerator), default_workers(config.num_workers),
                                  config.max_image_pixels)
    return float((probs.argmax(dim=1) == labels).to(torch.float64).mean())


def _test_accuracy(run: Run) -> float | None:
    metrics = run.metrics
    return metrics.get("accuracy") if metrics.get("split") == "test" else None


def write_outputs(result: AutoResult, config: Config, facts: DataFacts, related: Relatedness) -> None:
    """decisions.md (for people) and auto.json (for programs) in the auto folder."""
    atomic_write_text(result.folder / DECISIONS_FILE, decisions_markdown(result, config))
    summary: dict[str, Any] = {
        "data": config.data, "budget": config.budget, "rank_by": result.ranking.rank_by,
        "candidate": asdict(result.candidate), "strategy": result.strategy, "data_facts": asdict(facts),
        "relatedness": {**asdict(related), "similar": related.similar},
        "val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy,
        "negative_transfer": result.negative_transfer, "recommended": result.recommended,
        "runs": {"transfer": "transfer", "scratch": "scratch", "probe": "probe"}, "ranking": "ranking.csv",
        "decisions": [asdict(d) for d in result.decisions],
    }
    write_json(result.folder / SUMMARY_FILE, summary)


def decisions_markdown(result: AutoResult, config: Config) -> str:
    """Every decision with its reason, the accuracies of the three runs, and the ranking."""
    from cvtransfer.workflows.rank import ranking_table

    lines = [f"# cvtransfer auto: {config.data}", "", "| step | decision | reason |", "|---|---|---|"]
    lines += [f"| {d.step} | {d.choice} | {d.reason} |" for d in result.decisions]
    if result.negative_transfer:
        lines += ["", "**Negative transfer**: the transferred model is not better than training from scratch."]
    lines += ["", "| run | what | val accuracy | test accuracy |", "|---|---|---|---|"]
    what = {"transfer": f"{result.candidate.name}, {result.strategy}", "scratch": f"{result.candidate.backbone}, "
            "full, random init", "probe": f"{result.candidate.name}, frozen, logistic regression"}
    for name in ("transfer", "scratch", "probe"):
        test = result.test_accuracy[name]
        lines.append(f"| {name}/ | {what[name]} | {result.val_accuracy[name]:.4f} | "
                     f"{'n/a' if test is None else f'{test:.4f}'} |")
    lines += ["", "## Ranking (ranking.csv)", "", "```", ranking_table(result.ranking), "```", ""]
    return "\n".join(lines)
