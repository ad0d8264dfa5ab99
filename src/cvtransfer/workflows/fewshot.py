"""Few-shot classification with a pretrained backbone's features: ``fewshot-eval`` (seeded N-way K-shot
episodes, mean accuracy and its 95% interval per method) and ``fewshot`` (classify query images from a
support folder of a few labelled images per class).

The features come from the shared feature cache (:func:`cvtransfer.workflows.rank.extract`), so a second
evaluation of the same images and weights costs no backbone pass; every method sees the same episodes.
"""

from __future__ import annotations

import contextlib
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
from cvtransfer.few_shot.batchnorm import EpisodeFeatures, held_features, transductive_features
from cvtransfer.few_shot.episodes import Episode, episode_labels, interval95, sample_episodes
from cvtransfer.few_shot.finetune import EpisodeTuner
from cvtransfer.few_shot.methods import FEWSHOT_METHODS, NEEDS_IMAGES, NEEDS_TEXT, one_thread
from cvtransfer.io import atomic_write_text, write_json

if TYPE_CHECKING:
    from cvtransfer.config import Config
    from cvtransfer.run import Run

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
    when the weights carry no class names to check. A ``--task fewshot`` run trained on its train split's
    classes only: its val and test classes are held out."""
    if weights in ("imagenet", "none") or not Path(weights).exists():  # hub weights, an open_clip tag
        return None
    from cvtransfer.models.weights import read_state_dict, resolve_weights_file

    trained = read_state_dict(resolve_weights_file(weights))[1].get("classes")
    if trained is not None and (Path(weights) / "config.yaml").is_file():
        from cvtransfer.run import Run

        run = Run(weights)
        if run.config.task == "fewshot":
            trained = sorted({run.classes[label] for _, label in run.image_splits().train})
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
    plans = plan_episodes(samples, classes, config, shots_list)  # every refusal before the backbone runs
    notes = [note] if (note := check_held_out(classes, config.weights)) else []
    text = zero_shot_rows(config, classes) if NEEDS_TEXT & set(methods) else None  # refusals before the features
    start = time.perf_counter()
    if config.bn_stats == "transductive":
        features = backbone_transductive_features(samples, len(classes), config)
    else:
        features = held_features(features_of(samples, len(classes), config)[0])
    tuner = support_tuner(samples, len(classes), config) if NEEDS_IMAGES & set(methods) else None
    measured = measure_episodes(features, plans, config.ways, config.queries, methods, len(classes), text,
                                clip_settings(config), tuner)
    feature_seconds = time.perf_counter() - start - sum(row["seconds"] for row in measured.rows)
    folder.mkdir(parents=True, exist_ok=True)
    saved = {"backbone": config.backbone, "weights": config.weights, "data": config.data, "classes": classes,
             "images": len(samples), "seed": config.seed, "bn_stats": config.bn_stats,
             "feature_seconds": feature_seconds, "notes": notes, "results": measured.rows,
             "detail": measured.detail(classes)}
    write_pictures(measured.tally, classes, [path for path, _ in samples], folder, config.max_image_pixels)
    write_json(folder / RESULTS_FILE, saved)
    atomic_write_text(folder / TABLE_FILE, _csv(measured.rows))
    if config.report:
        write_fewshot_report(folder, saved)
    return FewShotResult(measured.rows, folder, classes, feature_seconds, notes)


def zero_shot_rows(config: Config, classes: list[str]) -> torch.Tensor:
    """The zero-shot head's rows for ``classes`` (--classes names, --templates), for the CLIP methods; refused
    unless the backbone is a CLIP model with its text tower (open_clip weights: a tag, a file or none)."""
    from cvtransfer.models.clip import create_clip, is_clip
    from cvtransfer.models.factory import is_cvtransfer_weights
    from cvtransfer.workflows.zeroshot import prompt_names, read_templates, zero_shot_head

    needing = ", ".join(sorted(NEEDS_TEXT & set(method_names(config.fewshot_methods))))
    if not is_clip(config.backbone):
        raise ConfigError(f"--fewshot-methods {needing} read CLIP's text embeddings: use a --backbone clip:NAME")
    if is_cvtransfer_weights(config.weights):
        raise ConfigError(f"--fewshot-methods {needing} need CLIP's text tower, which {config.weights} does not hold: "
                          "give open_clip weights (a tag or a checkpoint file)")
    clip = create_clip(config.backbone, config.weights, config.image_size)
    return zero_shot_head(clip, prompt_names(classes, config.classes), read_templates(config.templates))


def clip_settings(config: Config) -> dict[str, float]:
    """The CLIP methods' settings (--wise-alpha, --tip-alpha, --tip-beta)."""
    return {"wise_alpha": config.wise_alpha, "tip_alpha": config.tip_alpha, "tip_beta": config.tip_beta}


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


def backbone_transductive_features(samples: list[tuple[str, int]], num_classes: int,
                                   config: Config) -> EpisodeFeatures:
    """--bn-stats transductive: each episode's features computed together, BatchNorm on the episode's statistics."""
    from cvtransfer.engine.devices import pick_device

    built, images = _model_and_images(samples, num_classes, config)
    return transductive_features(built.model.backbone, images, pick_device(config.accelerator))


def support_tuner(samples: list[tuple[str, int]], num_classes: int, config: Config) -> EpisodeTuner:
    """finetune_last's: the model fine-tuned per episode on its support images."""
    from cvtransfer.engine.devices import pick_device
    from cvtransfer.few_shot.finetune import last_stage_tuner

    built, images = _model_and_images(samples, num_classes, config)
    return last_stage_tuner(built.model, images, pick_device(config.accelerator))


def _model_and_images(samples: list[tuple[str, int]], num_classes: int, config: Config) -> tuple[Any, Any]:
    """The backbone's model as fit and the feature cache build it (a random init seeded as theirs) and the
    samples' evaluation images (held in memory within --memory-limit-mb)."""
    from cvtransfer.data.memory import ImageMemory
    from cvtransfer.models.factory import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        built = build_model(config.backbone, config.weights, num_classes, config.image_size, seed=config.seed,
                            allow_partial_weights=config.allow_partial_weights)
    return built, ImageMemory.for_config(config).dataset(samples, built.preprocessing, "none", "evaluation")


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
    extra = {"text": zero_shot_rows(config, support_classes), **clip_settings(config)} if name in NEEDS_TEXT else {}
    if name in NEEDS_IMAGES:
        everything = shots + [(path, 0) for path in usable]
        tuner = support_tuner(everything, len(support_classes), config)
        scores = tuner(np.arange(len(shots)), support_labels, np.arange(len(shots), len(everything)),
                       len(support_classes))
    else:
        with torch.no_grad(), one_thread():
            scores = FEWSHOT_METHODS.get(name)(features[:len(shots)], support_labels, features[len(shots):],
                                               len(support_classes), **extra)
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
