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

from cvtransfer.errors import ConfigError, DataError
from cvtransfer.evaluation.fewshot_report import write_fewshot_report, write_pictures
from cvtransfer.few_shot.batchnorm import EpisodeFeatures, held_features, transductive_features
from cvtransfer.few_shot.evaluation import measure_episodes, parse_shots, plan_episodes, pooled_classes
from cvtransfer.few_shot.finetune import EpisodeTuner
from cvtransfer.few_shot.methods import FEWSHOT_METHODS, NEEDS_IMAGES, NEEDS_TEXT, one_thread
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
    episodic, tuner = image_episodes(samples, len(classes), config, config.bn_stats == "transductive",
                                     bool(NEEDS_IMAGES & set(methods)))
    features = episodic or held_features(features_of(samples, len(classes), config)[0])
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
    from cvtransfer.models.backbones import create_clip_model
    from cvtransfer.models.clip import is_clip
    from cvtransfer.models.factory import is_cvtransfer_weights
    from cvtransfer.workflows.zeroshot import prompt_names, read_templates, zero_shot_head

    needing = ", ".join(sorted(NEEDS_TEXT & set(method_names(config.fewshot_methods))))
    if not is_clip(config.backbone):
        raise ConfigError(f"--fewshot-methods {needing} read CLIP's text embeddings: use a --backbone clip:NAME")
    if is_cvtransfer_weights(config.weights):
        raise ConfigError(f"--fewshot-methods {needing} need CLIP's text tower, which {config.weights} does not hold: "
                          "give open_clip weights (a tag or a checkpoint file)")
    clip = create_clip_model(config.backbone, config.weights, config.image_size)
    return zero_shot_head(clip, prompt_names(classes, config.classes), read_templates(config.templates))


def clip_settings(config: Config) -> dict[str, float]:
    """The CLIP methods' settings (--wise-alpha, --tip-alpha, --tip-beta)."""
    return {"wise_alpha": config.wise_alpha, "tip_alpha": config.tip_alpha, "tip_beta": config.tip_beta}


def image_episodes(samples: list[tuple[str, int]], num_classes: int, config: Config, transductive: bool,
                   tune: bool) -> tuple[EpisodeFeatures | None, EpisodeTuner | None]:
    """What reads an episode's images rather than cached features: --bn-stats transductive's features (when
    ``transductive``) and finetune_last's tuner (when ``tune``), both from one model, built as fit and the
    feature cache build it (a random init seeded as theirs), and the samples' evaluation images held once."""
    if not (transductive or tune):
        return None, None
    from cvtransfer.data.memory import ImageMemory
    from cvtransfer.engine.devices import pick_device
    from cvtransfer.few_shot.finetune import last_stage_tuner
    from cvtransfer.models.factory import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        built = build_model(config.backbone, config.weights, num_classes, config.image_size, seed=config.seed,
                            allow_partial_weights=config.allow_partial_weights)
    images = ImageMemory.for_config(config).dataset(samples, built.preprocessing, "none", "evaluation")
    device = pick_device(config.accelerator)
    return (transductive_features(built.model.backbone, images, device) if transductive else None,
            last_stage_tuner(built.model, images, device) if tune else None)


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
        _, tuner = image_episodes(everything, len(support_classes), config, transductive=False, tune=True)
        assert tuner is not None
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
