"""What ``import cvtransfer`` offers: the same operations as the CLI, on the same Config.

    run = cvtransfer.fit(cvtransfer.Config(data="data/", backbone="resnet50", strategy="gradual"))
    run.evaluate()
    run.predict(["photo.jpg"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl

from cvtransfer.comparison import COMPARE_FILE, write_comparison
from cvtransfer.config import Config
from cvtransfer.engine import commands
from cvtransfer.engine.checks import adaptation_config
from cvtransfer.models.backbones import count_parameters, list_backbones
from cvtransfer.models.packaged_weights import packaged_weights
from cvtransfer.report import write_report
from cvtransfer.run import Run, write_predictions

if TYPE_CHECKING:
    from cvtransfer.workflows.auto import AutoResult
    from cvtransfer.workflows.fewshot import FewShotResult
    from cvtransfer.workflows.rank import Ranking

def fit(config: Config | None = None, callbacks: Sequence[pl.Callback] = (), **options: Any) -> Run:
    """Train a model as ``config`` (or ``Config(**options)``) says; return its run folder."""
    return commands.fit_run(_config(config, options), callbacks)


def segment(config: Config | None = None, callbacks: Sequence[pl.Callback] = (), **options: Any) -> Run:
    """:func:`fit` with ``task="segmentation"``: ``cvtransfer.segment(data="camvid/", decoder="unet")``."""
    return fit(config, callbacks, **{**options, "task": "segmentation"})


def detect(config: Config | None = None, callbacks: Sequence[pl.Callback] = (), **options: Any) -> Run:
    """:func:`fit` with ``task="detection"``: ``cvtransfer.detect(data="people/", detector="fcos")``."""
    return fit(config, callbacks, **{**options, "task": "detection"})


def resume(run_dir: str | Path, callbacks: Sequence[pl.Callback] = (), **overrides: Any) -> Run:
    """Continue an interrupted run from its last checkpoint (``overrides`` such as ``epochs=20`` allowed)."""
    return commands.resume_run(run_dir, callbacks, **overrides)


def evaluate(run_dir: str | Path, data: str | Path | None = None, out: str | Path | None = None,
             max_image_pixels: int | None = None) -> dict[str, Any]:
    """Metrics of a run on ``data`` (default: the run's test split, else val); writes metrics json."""
    return Run(run_dir, max_image_pixels).evaluate(data, out)


def predict(run_dir: str | Path, paths: Sequence[str | Path], top_k: int = 1,
            out: str | Path | None = None, max_image_pixels: int | None = None) -> list[dict[str, Any]]:
    """Predicted label and probability (and top-k) for images or folders; optionally written as CSV.

    A segmentation run writes each image's mask (a palette PNG of class indices) and overlay into the
    folder named as ``out`` without its suffix (default predictions/), and a row per image.
    """
    rows = Run(run_dir, max_image_pixels).predict(paths, top_k, out)
    if out is not None:
        write_predictions(rows, out)
    return rows


def backbones(pattern: str | None = None) -> list[dict[str, Any]]:
    """Backbone names matching ``pattern`` with parameter counts, default input size and offline weights.

    ``offline_weights``: the pip package that holds the name's ImageNet weights ("" when none does),
    ``offline_installed``: whether it is installed now (``--weights imagenet`` works without a hub).
    """
    rows = []
    for name in list_backbones(pattern):
        params, size = count_parameters(name)
        package = packaged_weights(name)
        rows.append({"name": name, "params": params, "input_size": size,
                     "offline_weights": package.distribution if package else "",
                     "offline_installed": package is not None and package.locate() is not None})
    return rows


def pretrained(name: str, out: str | Path | None = None) -> Run:
    """``name``'s pretrained model with its own classifier and class names, as a run folder.

    ``cvtransfer.pretrained("tf_efficientnet_lite0", "runs/lite0").predict(["photo.jpg"])`` gives ImageNet
    class names; the folder also serves as ``weights=`` for :func:`fit`.
    """
    from cvtransfer.workflows.pretrained import export_pretrained

    return export_pretrained(name, out)


def lr_find(config: Config | None = None, min_lr: float = 1e-7, max_lr: float = 1.0, steps: int = 100,
            **options: Any) -> dict[str, Any]:
    """LR range test on ``data``: ``{"suggestion", "rule", "minimum_10", "lrs", "losses", "plot", ...}``.

    ``cvtransfer.lr_find(data="data/", backbone="resnet18", out="runs/lr")`` writes lr_find.png and
    lr_find.json into ``out``; the suggestion is the steepest descent of the smoothed loss in log-LR.
    """
    from cvtransfer.workflows.lr_find import lr_find as range_test

    return range_test(_config(config, options), min_lr, max_lr, steps)


def rank(config: Config | None = None, **options: Any) -> Ranking:
    """Score candidate backbones on ``data`` without fine-tuning; ranking.csv in ``out``.

    ``cvtransfer.rank(data="data/", backbones="resnet18,resnet50", weights="imagenet")``; ``backbones``
    may also be a list. ``validate=True`` also trains a logistic probe per candidate and correlates.
    """
    from cvtransfer.workflows.rank import rank_backbones

    return rank_backbones(_config(config, options))


def auto(config: Config | None = None, **options: Any) -> AutoResult:
    """Choose backbone and strategy from the data, train them and a from-scratch baseline; decisions.md in ``out``."""
    from cvtransfer.workflows.auto import run_auto

    return run_auto(_config(config, options))


def adapt(config: Config | None = None, callbacks: Sequence[pl.Callback] = (), **options: Any) -> Run:
    """Adapt from labelled ``data`` (the source) to unlabelled ``target``; return the run folder.

    ``cvtransfer.adapt(data="mnist/", target="usps/", method="dann", backbone="lenet", weights="none")``.
    Options not given take adapt's defaults (SGD, lr 0.01, inv schedule, 20 epochs; see ADAPT_DEFAULTS);
    a ``config`` is used as it is.
    """
    config = config.replace(**options) if config is not None else Config(**adaptation_config(options))
    return commands.adapt_run(config, callbacks)


def shift(source: str | Path, target: str | Path, config: Config | None = None, out: str | Path | None = None,
          **options: Any) -> dict[str, Any]:
    """MMD, proxy A-distance and Wasserstein distance between two domains in a backbone's features.

    Written to ``out``/shift.json when ``out`` is given. ``cvtransfer.shift("a/", "b/", backbone="resnet18")``.
    """
    from cvtransfer.engine.domain_shift import SHIFT_FILE
    from cvtransfer.io import write_json
    from cvtransfer.workflows.shift import measure_shift

    result = measure_shift(_config(config, options), source, target)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / SHIFT_FILE, result)
    return result


def fewshot_eval(config: Config | None = None, **options: Any) -> FewShotResult:
    """Few-shot accuracy of a backbone's features on seeded N-way K-shot episodes of ``data``'s classes, per
    method, with 95% intervals; fewshot.json and fewshot.csv in ``out``.

    ``cvtransfer.fewshot_eval(data="office/", backbone="tf_efficientnet_lite0", ways=5, shots="1,5")``.
    """
    from cvtransfer.workflows.fewshot import evaluate_fewshot

    return evaluate_fewshot(_config(config, options))


def fewshot(support: str | Path, queries: str | Path | Sequence[str | Path], out: str | Path | None = None,
            config: Config | None = None, **options: Any) -> list[dict[str, Any]]:
    """Label ``queries`` (images or folders) from ``support`` (class folders of a few images each) with the first
    of ``fewshot_methods`` on the backbone's features; rows of path, label, score (also written to ``out``)."""
    from cvtransfer.workflows.fewshot import classify_queries

    rows = classify_queries(_config(config, options), support,
                            [queries] if isinstance(queries, (str, Path)) else list(queries))
    if out is not None:
        write_predictions(rows, out)
    return rows


def zeroshot(config: Config | None = None, **options: Any) -> Run:
    """Classify ``data``'s images from their class names with a CLIP model: a run folder (metrics.json, report).

    ``cvtransfer.zeroshot(data="photos/", backbone="clip:ViT-B-32", weights="clip.safetensors")``.
    """
    from cvtransfer.workflows.zeroshot import zeroshot as run_zeroshot

    return run_zeroshot(_config(config, options))


def _config(config: Config | None, options: dict[str, Any]) -> Config:
    if isinstance(options.get("backbones"), (list, tuple)):  # rank/auto: a list of names is welcome too
        options = {**options, "backbones": ",".join(options["backbones"])}
    if config is None:
        return Config(**options)
    return config.replace(**options) if options else config


def report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of a run folder (default ``RUN_DIR/report.html``); return its path."""
    return write_report(run_dir, out)


def compare(run_dirs: Sequence[str | Path], out: str | Path = COMPARE_FILE) -> Path:
    """Write one HTML page comparing run folders (table with the best highlighted, overlaid curves)."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    return write_comparison(run_dirs, out)


def convert(src: str | Path, dst: str | Path, to: str, missing_labels: str = "error",
            max_image_pixels: int | None = None) -> Path:
    """Write object detection data (COCO, Pascal VOC or YOLO, told by its layout; splits kept) as a new folder
    ``dst`` in format ``to``; ``missing_labels="background"`` reads images without labels as images without objects;
    images of more than ``max_image_pixels`` (default: the Config's) are refused.
    """
    from cvtransfer.config import Config
    from cvtransfer.data.box_formats import convert as convert_boxes

    return convert_boxes(src, dst, to, missing_labels, max_image_pixels or Config.max_image_pixels)
