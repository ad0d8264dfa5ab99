"""Rank candidate backbones on a target dataset by transferability scores, without fine-tuning them.

    candidates (backbone, weights) -> features of the target training set (cached) -> every score
    -> a table best first, ranking.csv; optionally a logistic probe per candidate and the rank
    correlation (Kendall tau, weighted tau) of each score with the probe accuracy.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from cvtransfer.config import Config
from cvtransfer.data.features import cached_features
from cvtransfer.data.folders import DatasetSplits, discover
from cvtransfer.data.loaders import default_workers
from cvtransfer.errors import ConfigError
from cvtransfer.io import atomic_write_text
from cvtransfer.models.factory import BuiltModel, build_model
from cvtransfer.run import Run
from cvtransfer.scores.base import ScoreInputs
from cvtransfer.scores.transferability.base import SCORES
from cvtransfer.scores.transferability.source import SourceClassifier, source_classifier

log = logging.getLogger(__name__)

RANKING_FILE = "ranking.csv"
SPECIAL_WEIGHTS = ("imagenet", "none")


@dataclass(frozen=True)
class Candidate:
    """A backbone with its weights; ``name`` tells it apart from the other candidates."""

    name: str
    backbone: str
    weights: str


@dataclass
class CandidateScores:
    """What ranking found about one candidate."""

    candidate: Candidate
    scores: dict[str, float]
    feature_seconds: float
    score_seconds: float
    notes: list[str] = field(default_factory=list)
    probe_accuracy: float | None = None


@dataclass
class Ranking:
    """Candidates best first by ``rank_by``, and the score/probe rank correlations when validated."""

    rows: list[CandidateScores]
    rank_by: str
    folder: Path
    correlations: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def best(self) -> CandidateScores:
        return self.rows[0]


def split_list(value: str | Sequence[str] | None) -> list[str]:
    """``"a, b,c"`` or ``["a", "b"]`` -> ``["a", "b", "c"]``."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [item.strip() for item in items if item.strip()]


def parse_candidates(backbones: str | Sequence[str] | None, weights: str) -> list[Candidate]:
    """Candidates from ``--backbones`` and ``--weights`` (one value, one per backbone, or NAME=PATH pairs).

    With pairs, a backbone named twice takes that name's pairs in order; without ``--backbones``
    the pairs are the candidates.
    """
    names, items = split_list(backbones), split_list(weights)
    if any("=" in item for item in items):
        pairs = _pairs(items)
        chosen = _match_pairs(names, pairs) if names else pairs
    elif len(items) == 1:
        chosen = [(name, items[0]) for name in names]
    elif len(items) == len(names):
        chosen = list(zip(names, items))
    else:
        raise ConfigError(f"--weights gives {len(items)} values for {len(names)} backbones: give one for all, "
                          "one per backbone in order, or NAME=PATH pairs")
    if not chosen:
        raise ConfigError("no candidate backbones: pass --backbones resnet18,resnet50 (or --weights NAME=PATH pairs)")
    if len(set(chosen)) < len(chosen):
        raise ConfigError("the same backbone with the same weights is given twice in --backbones/--weights")
    return _named(chosen)


def _pairs(items: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        name, _, value = (part.strip() for part in item.partition("="))
        if not name or not value:
            raise ConfigError(f"--weights item '{item}' is not NAME=PATH: with pairs, give every weights as NAME=PATH")
        pairs.append((name, value))
    return pairs


def _match_pairs(names: list[str], pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    remaining = list(pairs)
    chosen = []
    for name in names:
        match = next((pair for pair in remaining if pair[0] == name), None)
        if match is None:
            raise ConfigError(f"--weights has no pair {name}=PATH for backbone '{name}' (one pair per occurrence)")
        remaining.remove(match)
        chosen.append(match)
    if remaining:
        raise ConfigError(f"--weights pair {remaining[0][0]}={remaining[0][1]} matches no backbone of --backbones")
    return chosen


def _named(chosen: list[tuple[str, str]]) -> list[Candidate]:
    """Candidates named by their backbone, plus ``@`` and a short weights label where a name repeats."""
    counts = {name: sum(1 for other, _ in chosen if other == name) for name, _ in chosen}
    labels = [_weights_label(weights) for _, weights in chosen]
    names = [name if counts[name] == 1 else f"{name}@{label}" for (name, _), label in zip(chosen, labels)]
    names = [name if names.count(name) == 1 else f"{backbone}@{weights}"
             for name, (backbone, weights) in zip(names, chosen)]
    return [Candidate(name, backbone, weights) for name, (backbone, weights) in zip(names, chosen)]


def _weights_label(weights: str) -> str:
    """imagenet/none as they are; a run folder's name; a file's stem (its folder's name for model.*)."""
    if weights in SPECIAL_WEIGHTS:
        return weights
    path = Path(weights)
    if path.is_dir() or not path.suffix:
        return path.name
    return path.parent.name if path.stem == "model" and path.parent.name else path.stem


def extract(candidate: Candidate, samples: list[tuple[str, int]], num_classes: int, config: Config
            ) -> tuple[tuple[torch.Tensor, torch.Tensor], BuiltModel, float]:
    """(features, labels) of ``samples`` through the candidate's backbone, from the shared cache."""
    from cvtransfer.engine.devices import pick_device

    with torch.random.fork_rng(devices=[]):  # random init as ``fit`` makes it, so the cache key "none:...:seedN" holds
        torch.manual_seed(config.seed)
        built = build_model(candidate.backbone, candidate.weights, num_classes, config.image_size,
                            seed=config.seed, allow_partial_weights=config.allow_partial_weights)
    start = time.perf_counter()
    features = cached_features(
        built.model.backbone, samples, built.preprocessing, backbone=built.backbone.name,
        weights_id=built.weights_id, cache_dir=config.cache_dir, batch_size=config.batch_size,
        num_workers=default_workers(config.num_workers), device=pick_device(config.accelerator),
        max_pixels=config.max_image_pixels,
    )
    return features, built, time.perf_counter() - start


def compute_scores(features: torch.Tensor, labels: torch.Tensor, source: SourceClassifier | None
                   ) -> dict[str, float]:
    """Every registered score; those reading source-class probabilities are NaN without a source classifier."""
    probs = source.probabilities(features) if source is not None else None
    return SCORES.compute(ScoreInputs(features=features, labels=labels, source_probs=probs))


def score_candidate(candidate: Candidate, splits: DatasetSplits, config: Config) -> CandidateScores:
    """Features of the target training set, then every score, timed."""
    (features, labels), built, feature_seconds = extract(candidate, splits.train, len(splits.classes), config)
    source, note = source_classifier(built.backbone, candidate.weights)
    start = time.perf_counter()
    scores = compute_scores(features, labels, source)
    score_seconds = time.perf_counter() - start
    notes = [f"leep, nce: {note}" if source is not None else f"leep, nce: not available ({note})"]
    log.info("%s: %s (features %.1fs, scores %.1fs)", candidate.name,
             ", ".join(f"{k} {v:.4g}" for k, v in scores.items()), feature_seconds, score_seconds)
    return CandidateScores(candidate, scores, feature_seconds, score_seconds, notes)


def rank_backbones(config: Config, splits: DatasetSplits | None = None) -> Ranking:
    """Score every candidate of ``config.backbones`` / ``config.weights`` on the training split of ``config.data``.

    With ``config.validate``, also train a logistic probe per candidate (cached features, through ``fit``)
    and correlate each score with its validation accuracy. Writes ranking.csv into ``config.out``.
    """
    candidates = parse_candidates(config.backbones, config.weights)
    SCORES.get(config.rank_by)
    folder = Path(config.out) if config.out else Path("runs") / f"rank-{time.strftime('%Y%m%d-%H%M%S')}"
    if config.validate and (folder / "probes").exists():
        raise ConfigError(f"{folder / 'probes'} already holds probe runs: choose another --out")
    if splits is None:
        if config.data is None:
            raise ConfigError("no data given: pass DATA_DIR (or data= in the config)")
        splits = discover(config.data, config.val_split, config.test_split, config.seed, config.max_image_pixels)
    rows = [score_candidate(candidate, splits, config) for candidate in candidates]
    ranking = Ranking(order(rows, config.rank_by), config.rank_by, folder)
    if config.validate:
        for row in ranking.rows:
            run = probe(row.candidate, config, folder / "probes" / safe_name(row.candidate.name))
            row.probe_accuracy = run.history[-1]["val_accuracy"]
        ranking.correlations = rank_correlations(ranking.rows)
    write_ranking(ranking, folder / RANKING_FILE)
    return ranking


def probe(candidate: Candidate, config: Config, out: Path) -> Run:
    """A logistic-regression probe of the candidate's frozen features (the feature cache is reused)."""
    from cvtransfer.engine.commands import fit_run

    return fit_run(config.replace(backbone=candidate.backbone, weights=candidate.weights, strategy="linear",
                                  head="logistic", loss="", augment="none", mixup=0.0, cutmix=0.0, backbones=None, validate=False, out=str(out)))


def safe_name(name: str) -> str:
    """A candidate's name as a folder name."""
    return re.sub(r"[^\w.@=-]+", "_", name)


def order(rows: list[CandidateScores], rank_by: str) -> list[CandidateScores]:
    """Best first by ``rank_by`` (a registered score); candidates without that score last."""
    SCORES.get(rank_by)  # unknown names raise with the closest ones
    return sorted(rows, key=lambda row: (math.isnan(row.scores[rank_by]), -np.nan_to_num(row.scores[rank_by])))


def rank_correlations(rows: list[CandidateScores]) -> dict[str, dict[str, float]]:
    """Per score: Kendall tau and weighted tau (top-weighted) against the probe accuracy, and the count."""
    result = {}
    for name in SCORES:
        pairs = [(row.scores[name], row.probe_accuracy) for row in rows
                 if row.probe_accuracy is not None and not math.isnan(row.scores[name])]
        tau = weighted = math.nan
        if len(pairs) >= 2:
            x, y = np.array(pairs).T
            with warnings.catch_warnings():  # constant input: tau is NaN, which is the answer
                warnings.simplefilter("ignore")
                tau = float(stats.kendalltau(x, y).statistic)
                weighted = float(stats.weightedtau(x, y).statistic)
        result[name] = {"kendall_tau": tau, "weighted_tau": weighted, "candidates": len(pairs)}
    return result


def ranking_table(ranking: Ranking) -> str:
    """The ranking as aligned text (what ``cvtransfer rank`` prints)."""
    names = SCORES.names()
    width = max([len(row.candidate.name) for row in ranking.rows] + [9])
    probe = any(row.probe_accuracy is not None for row in ranking.rows)
    lines = [f"{'rank':<4}  {'candidate':<{width}}" + "".join(f"  {n:>8}" for n in names)
             + f"  {'features':>8}  {'scoring':>7}" + ("  probe acc" if probe else "")]
    for index, row in enumerate(ranking.rows, start=1):
        line = f"{index:<4}  {row.candidate.name:<{width}}" + "".join(f"  {_fmt(row.scores[n]):>8}" for n in names)
        line += f"  {row.feature_seconds:>7.1f}s  {row.score_seconds:>6.2f}s"
        lines.append(line + (f"  {_fmt(row.probe_accuracy):>9}" if probe else ""))
    lines.append(f"(ordered by {ranking.rank_by}; higher is better for every score)")
    for row in ranking.rows:
        lines += [f"{row.candidate.name}: {note}" for note in row.notes]
    if ranking.correlations:
        lines.append("\nscore vs probe accuracy  kendall tau  weighted tau  candidates")
        for name, values in ranking.correlations.items():
            lines.append(f"{name:<23}  {_fmt(values['kendall_tau']):>11}  {_fmt(values['weighted_tau']):>12}  "
                         f"{values['candidates']:>10}")
    return "\n".join(lines)


def write_ranking(ranking: Ranking, path: Path) -> None:
    """ranking.csv: rank, candidate, backbone, weights, every score, feature/scoring seconds, probe accuracy."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "candidate", "backbone", "weights", *SCORES.names(), "feature_seconds",
                     "score_seconds", "probe_accuracy"])
    for index, row in enumerate(ranking.rows, start=1):
        writer.writerow([index, row.candidate.name, row.candidate.backbone, row.candidate.weights,
                         *(f"{row.scores[n]:.6g}" for n in SCORES.names()), f"{row.feature_seconds:.3f}",
                         f"{row.score_seconds:.3f}", "" if row.probe_accuracy is None else f"{row.probe_accuracy:.4f}"])
    atomic_write_text(path, buffer.getvalue())


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4g}"
