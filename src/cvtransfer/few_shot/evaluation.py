"""Episodes measured: the seeded plan, every method's accuracy with its 95% interval, and a ``--task fewshot``
run's own evaluation. The workflows (``fewshot-eval``, ``fewshot``) and the task share it."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cvtransfer.data.folders import discover_pooled
from cvtransfer.errors import ConfigError, DataError
from cvtransfer.evaluation.fewshot_report import EpisodeTally, write_pictures
from cvtransfer.few_shot.batchnorm import EpisodeFeatures, held_features, transductive_features
from cvtransfer.few_shot.episodes import Episode, episode_labels, interval95, sample_episodes
from cvtransfer.few_shot.finetune import EpisodeTuner
from cvtransfer.few_shot.methods import FEWSHOT_METHODS, NEEDS_IMAGES, NEEDS_TEXT, one_thread

if TYPE_CHECKING:
    from cvtransfer.config import Config
    from cvtransfer.run import Run

log = logging.getLogger(__name__)


def parse_shots(text: str) -> list[int]:
    """--shots '1,5' as [1, 5]; anything but positive integers is a one-line error."""
    try:
        shots = [int(part) for part in str(text).replace(" ", "").split(",") if part]
    except ValueError:
        shots = []
    if not shots or any(value < 1 for value in shots):
        raise ConfigError(f"--shots '{text}' is not a list of positive numbers of images: give e.g. 1,5")
    return shots


def pooled_classes(data: str | Path, max_pixels: int) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, samples) of every class folder of ``data`` (:func:`discover_pooled`)."""
    found = discover_pooled(data, max_pixels)
    return found.classes, found.train


def plan_episodes(samples: list[tuple[str, int]], classes: list[str], config: Config,
                  shots_list: list[int]) -> dict[int, list[Episode]]:
    """The seeded --episodes episodes of --ways classes for each number of shots (the same for every method)."""
    labels = np.array([label for _, label in samples])
    return {shots: sample_episodes(labels, classes, config.ways, shots, config.queries, config.episodes, config.seed)
            for shots in shots_list}


@dataclass
class Measured:
    """One row per (method, shots) and the tally of the first method at the most shots."""

    rows: list[dict[str, Any]]
    tally: EpisodeTally
    method: str
    shots: int

    def detail(self, classes: list[str]) -> dict[str, Any]:
        return {"method": self.method, "shots": self.shots, "per_class": self.tally.per_class(classes),
                "confusion": self.tally.confusion.tolist()}


def measure_episodes(features: EpisodeFeatures, plans: dict[int, list[Episode]], ways: int, queries: int,
                     methods: list[str], num_classes: int, text: torch.Tensor | None = None,
                     settings: dict[str, float] | None = None, tuner: EpisodeTuner | None = None) -> Measured:
    """Accuracy and its 95% interval of each method on the planned episodes; ``features`` gives an episode's
    support and query features together (held rows, or computed per episode with --bn-stats transductive);
    ``text``: the zero-shot head's row of every class, for the CLIP methods, with their ``settings``; ``tuner``:
    what fine-tunes on an episode's images (finetune_last)."""
    detail = (methods[0], max(plans))  # the setting the report breaks down by class
    tally = EpisodeTally(num_classes)
    rows = []
    query_labels = torch.from_numpy(episode_labels(ways, queries))
    for shots, episodes in plans.items():
        support_labels = torch.from_numpy(episode_labels(ways, shots))
        support_count = ways * shots
        with torch.no_grad():
            episode_features = [features(np.concatenate([episode.support, episode.query])) for episode in episodes]
        for name in methods:
            classify = FEWSHOT_METHODS.get(name)
            start, accuracies = time.perf_counter(), []
            # tiny per-episode tensors run on one thread; fine-tuning a backbone on images uses them all
            with torch.no_grad(), contextlib.nullcontext() if name in NEEDS_IMAGES else one_thread():
                for episode, both in zip(episodes, episode_features):
                    if name in NEEDS_IMAGES:  # trains on the episode's images: given their sample indices
                        scores = classify(episode.support, support_labels, episode.query, ways, tuner=tuner)
                    else:
                        extra = {"text": text[episode.classes], **(settings or {})} if text is not None and \
                            name in NEEDS_TEXT else {}
                        scores = classify(both[:support_count], support_labels, both[support_count:], ways, **extra)
                    predicted = scores.argmax(dim=1)
                    accuracies.append(float((predicted == query_labels).float().mean()))
                    if (name, shots) == detail:
                        tally.add(episode.classes, episode.support, shots, episode.query, query_labels.numpy(),
                                  predicted.numpy())
            mean, half = interval95(accuracies)
            rows.append({"method": name, "ways": ways, "shots": shots, "queries": queries,
                         "episodes": len(episodes), "accuracy": mean, "ci95": half,
                         "seconds": time.perf_counter() - start})
            log.info("%s %d-way %d-shot: %.4f +- %s", name, ways, shots, mean, "n/a" if half is None else f"{half:.4f}")
    return Measured(rows, tally, *detail)


def evaluate_episodes(run: Run, data: str | Path | None, out: Path, device: torch.device) -> dict[str, Any]:
    """metrics.json of a ``--task fewshot`` run: ProtoNet's accuracy on the run's --episodes seeded episodes of
    its test classes (else its val classes), or of every class of ``data``, for each --shots, features by
    --bn-stats; confusion.png and errors.png beside ``out`` for the run's own classes."""
    from cvtransfer.data.features import compute_features
    from cvtransfer.data.loaders import default_workers
    from cvtransfer.data.memory import ImageMemory

    config = run.config
    if data is not None:
        name, (classes, samples) = "data", pooled_classes(data, run.max_image_pixels)
    else:
        splits = run.image_splits()
        name = "test" if splits.test else "val"
        present = sorted({label for _, label in splits.split(name)})  # the split's own classes, relabelled 0..
        position = {label: i for i, label in enumerate(present)}
        classes = [run.classes[label] for label in present]
        samples = [(path, position[label]) for path, label in splits.split(name)]
    if not samples:
        raise DataError(f"no images to evaluate episodes on in the {name} split")
    plans = plan_episodes(samples, classes, config, parse_shots(config.shots))
    backbone = run.model.backbone
    if config.bn_stats == "transductive":
        images = ImageMemory.for_config(config).dataset(samples, run.preprocessing, "none", name)
        features = transductive_features(backbone, images, device)
    else:
        held, _ = compute_features(backbone, samples, run.preprocessing, config.batch_size,
                                   default_workers(config.num_workers), device, run.max_image_pixels)
        features = held_features(held)
    measured = measure_episodes(features, plans, config.ways, config.queries, ["protonet"], len(classes))
    if data is None:
        write_pictures(measured.tally, classes, [path for path, _ in samples], out.parent, run.max_image_pixels)
    first = measured.rows[0]
    return {"split": name, "accuracy": first["accuracy"], "ci95": first["ci95"], "ways": config.ways,
            "shots": first["shots"], "queries": config.queries, "episodes": first["episodes"],
            "bn_stats": config.bn_stats, "num_classes": len(classes),
            "num_samples": len(samples), "results": measured.rows, "detail": measured.detail(classes)}


