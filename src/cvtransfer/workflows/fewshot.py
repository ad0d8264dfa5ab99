"""Few-shot classification with a pretrained backbone's features: ``fewshot-eval`` (seeded N-way K-shot
episodes, mean accuracy and its 95% interval per method) and ``fewshot`` (classify query images from a
support folder of a few labelled images per class).

The features come from the shared feature cache (:func:`cvtransfer.workflows.rank.extract`), so a second
evaluation of the same images and weights costs no backbone pass; every method sees the same episodes.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cvtransfer.data.folders import discover_pooled
from cvtransfer.errors import ConfigError, DataError
from cvtransfer.evaluation.fewshot_report import EpisodeTally, write_fewshot_report, write_pictures
from cvtransfer.few_shot.episodes import episode_labels, interval95, sample_episodes
from cvtransfer.few_shot.methods import FEWSHOT_METHODS, one_thread
from cvtransfer.io import atomic_write_text, write_json

if TYPE_CHECKING:
    from cvtransfer.config import Config

log = logging.getLogger(__name__)

RESULTS_FILE = "fewshot.json"
TABLE_FILE = "fewshot.csv"


@dataclass
class FewShotResult:
    """``rows``: one per (method, shots): accuracy, its 95% half-interval and the setting; ``folder``: where
    fewshot.json and fewshot.csv were written."""

    rows: list[dict[str, Any]]
    folder: Path
    classes: list[str]
    feature_seconds: float
    notes: list[str] = field(default_factory=list)


def parse_shots(text: str) -> list[int]:
    """--shots '1,5' as [1, 5]; anything but positive integers is a one-line error."""
    try:
        shots = [int(part) for part in str(text).replace(" ", "").split(",") if part]
    except ValueError:
        shots = []
    if not shots or any(value < 1 for value in shots):
        raise ConfigError(f"--shots '{text}' is not a list of positive numbers of images: give e.g. 1,5")
    return shots


def method_names(text: str) -> list[str]:
    """--fewshot-methods as registered names (unknown names raise with the closest ones)."""
    names = [part for part in str(text).replace(" ", "").split(",") if part]
    if not names:
        raise ConfigError("--fewshot-methods is empty: name at least one of " + ", ".join(FEWSHOT_METHODS.names()))
    for name in names:
        FEWSHOT_METHODS.get(name)
    return names


def evaluation_samples(config: Config) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, samples) of DATA_DIR, all its splits together, restricted to --classes-file when given."""
    if config.data is None:
        raise ConfigError("no data given: pass DATA_DIR (class folders of the classes to evaluate on)")
    classes, samples = pooled_classes(config.data, config.max_image_pixels)
    if config.classes_file:
        path = Path(config.classes_file)
        if not path.is_file():
            raise ConfigError(f"--classes-file {path} does not exist: give a text file of class names, one a line")
        wanted = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        unknown = [name for name in wanted if name not in classes]
        if unknown:
            raise DataError(f"{path} names class(es) not in {config.data}: {', '.join(unknown[:5])}: fix the file")
        keep = {classes.index(name): i for i, name in enumerate(wanted)}
        samples = [(path_, keep[label]) for path_, label in samples if label in keep]
        classes = wanted
    return classes, samples


def pooled_classes(data: str | Path, max_pixels: int) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, samples) of every class folder of ``data`` (:func:`discover_pooled`)."""
    found = discover_pooled(data, max_pixels)
    return found.classes, found.train


def check_held_out(classes: list[str], weights: str) -> str | None:
    """Refuse evaluation classes that the weights (a run folder or a cvtransfer file) were trained on; a note
    when the weights carry no class names to check."""
    if weights in ("imagenet", "none"):
        return None
    from cvtransfer.models.weights import read_state_dict, resolve_weights_file

    trained = read_state_dict(resolve_weights_file(weights))[1].get("classes")
    if trained is None:
        return f"{weights} names no training classes: held-out evaluation classes could not be checked"
    seen = sorted(set(classes) & set(trained))
    if seen:
        raise DataError(f"evaluation class(es) {', '.join(seen[:5])} were training classes of {weights}: evaluate on "
                        "held-out classes (--classes-file lists them)")
    return None


def features_of(samples: list[tuple[str, int]], num_classes: int, config: Config) -> tuple[torch.Tensor, float]:
    """The backbone's (cached) features of ``samples`` and the seconds they took."""
    from cvtransfer.workflows.rank import Candidate, extract

    (features, _), _, seconds = extract(Candidate(config.backbone, config.backbone, config.weights), samples,
                                        num_classes, config)
    return features.float(), seconds


def evaluate_fewshot(config: Config) -> FewShotResult:
    """Every --fewshot-methods method on the same --episodes seeded episodes for each --shots; fewshot.json,
    fewshot.csv, confusion.png, errors.png and report.html (the first method at the most shots broken down by
    class) written into --out (default runs/fewshot-<time>) once everything is measured."""
    shots_list, methods = parse_shots(config.shots), method_names(config.fewshot_methods)
    folder = Path(config.out) if config.out else Path("runs") / f"fewshot-{time.strftime('%Y%m%d-%H%M%S')}"
    if (folder / "config.yaml").is_file() or (folder / "model.safetensors").is_file():
        raise ConfigError(f"--out {folder} is a run folder: give fewshot-eval a folder of its own")
    classes, samples = evaluation_samples(config)
    labels = np.array([label for _, label in samples])
    plans = {shots: sample_episodes(labels, classes, config.ways, shots, config.queries, config.episodes, config.seed)
             for shots in shots_list}  # every refusal before the backbone runs
    notes = [note] if (note := check_held_out(classes, config.weights)) else []
    features, feature_seconds = features_of(samples, len(classes), config)
    detail = (methods[0], max(shots_list))  # the setting the report breaks down by class
    tally = EpisodeTally(len(classes))
    rows = []
    for shots, episodes in plans.items():
        support_labels = torch.from_numpy(episode_labels(config.ways, shots))
        query_labels = torch.from_numpy(episode_labels(config.ways, config.queries))
        for name in methods:
            classify = FEWSHOT_METHODS.get(name)
            start, accuracies = time.perf_counter(), []
            with torch.no_grad(), one_thread():
                for episode in episodes:
                    scores = classify(features[episode.support], support_labels, features[episode.query], config.ways)
                    predicted = scores.argmax(dim=1)
                    accuracies.append(float((predicted == query_labels).float().mean()))
                    if (name, shots) == detail:
                        tally.add(episode.classes, episode.support, shots, episode.query, query_labels.numpy(),
                                  predicted.numpy())
            mean, half = interval95(accuracies)
            rows.append({"method": name, "ways": config.ways, "shots": shots, "queries": config.queries,
                         "episodes": len(episodes), "accuracy": mean, "ci95": half,
                         "seconds": time.perf_counter() - start})
            log.info("%s %d-way %d-shot: %.4f +- %s", name, config.ways, shots, mean,
                     "n/a" if half is None else f"{half:.4f}")
    folder.mkdir(parents=True, exist_ok=True)
    saved = {"backbone": config.backbone, "weights": config.weights, "data": config.data, "classes": classes,
             "images": len(samples), "seed": config.seed, "feature_seconds": feature_seconds, "notes": notes,
             "results": rows, "detail": {"method": detail[0], "shots": detail[1], "per_class": tally.per_class(classes),
                                         "confusion": tally.confusion.tolist()}}
    write_pictures(tally, classes, [path for path, _ in samples], folder, config.max_image_pixels)
    write_json(folder / RESULTS_FILE, saved)
    atomic_write_text(folder / TABLE_FILE, _csv(rows))
    if config.report:
        write_fewshot_report(folder, saved)
    return FewShotResult(rows, folder, classes, feature_seconds, notes)


def classify_queries(config: Config, support: str | Path, queries: list[str | Path]) -> list[dict[str, Any]]:
    """The first --fewshot-methods method's label for each query image (files or folders), learned from
    ``support`` (class folders of a few images each): rows of path, label, score (the winning class's share of
    a softmax over the method's scores)."""
    from cvtransfer.data.images import split_usable
    from cvtransfer.run import expand_images

    name = method_names(config.fewshot_methods)[0]
    support_classes, shots = pooled_classes(support, config.max_image_pixels)
    usable, skipped = split_usable([str(path) for path in expand_images(queries)], config.max_image_pixels)
    for file, reason in skipped:
        log.warning("skipped %s: %s", file, reason)
    if not usable:
        raise DataError(f"no readable query images among {', '.join(map(str, queries[:3]))}")
    features, _ = features_of(shots + [(path, 0) for path in usable], len(support_classes), config)
    support_labels = torch.tensor([label for _, label in shots])
    with torch.no_grad(), one_thread():
        scores = FEWSHOT_METHODS.get(name)(features[:len(shots)], support_labels, features[len(shots):],
                                           len(support_classes))
    shares = scores.float().softmax(dim=1)
    return [{"path": path, "label": support_classes[int(best)], "score": float(shares[i, best])}
            for i, (path, best) in enumerate(zip(usable, scores.argmax(dim=1).tolist()))]


def fewshot_table(result: FewShotResult) -> str:
    """The results as aligned text: one line per method and shots (what ``fewshot-eval`` prints)."""
    lines = [f"{'method':<16}{'setting':>16}{'accuracy':>10}{'95% interval':>15}{'episodes':>10}"]
    for row in result.rows:
        setting = f"{row['ways']}-way {row['shots']}-shot"
        interval = "n/a" if row["ci95"] is None else f"+- {row['ci95']:.4f}"
        lines.append(f"{row['method']:<16}{setting:>16}{row['accuracy']:>10.4f}{interval:>15}"
                     f"{row['episodes']:>10}")
    lines.append(f"features: {result.feature_seconds:.1f}s for {len(result.classes)} classes")
    return "\n".join(lines + result.notes)


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
