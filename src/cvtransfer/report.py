"""``report.html``: one self-contained page per run folder, with everything a person wants to see.

    cvtransfer.report.write_report("runs/resnet18-full")   # or: cvtransfer report RUN_DIR

Sections: summary and config, data, learning curves, confusion matrix, per-class table, ROC curves,
diagnosis, top losses, Grad-CAM, t-SNE embedding (by class, and by domain for adaptation runs).
Every figure is drawn with matplotlib and inlined; the page opens from disk without a network.
A section that cannot be made says so on the page ("Grad-CAM: not available: ...") and in a logged
warning; it does not stop the others, and :func:`write_report_safely` (the end of ``fit`` and
``adapt``) never turns a finished training into a failure.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from cvtransfer.config import ADAPT, TRAINING_GROUPS, Config
from cvtransfer.errors import CvTransferError
from cvtransfer.evaluation import interpret
from cvtransfer.evaluation.html import (
    Section,
    cards_html,
    figure_html,
    figures_html,
    note,
    table_html,
    write_page,
)
from cvtransfer.evaluation.metrics import classification_metrics
from cvtransfer.evaluation.plots import confusion_figure, curves_figure, roc_figure
from cvtransfer.io import read_json
from cvtransfer.models.weights import MODEL_FILE
from cvtransfer.options import owner_of
from cvtransfer.run import (
    Run,
    feature_input,
    is_adaptation,
    run_diagnosis,
    run_title,
    selection_curve,
    training_seconds,
)

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
# Section ids in page order (the browser test checks each one is on the page).
SECTIONS = ("summary", "config", "data", "curves", "confusion", "per-class", "roc", "diagnosis",
            "top-losses", "grad-cam", "embedding")
TOP_LOSSES = 8
GRAD_CAM_IMAGES = 8
EMBEDDING_POINTS = 600  # t-SNE grows quadratically; a random subsample per domain shows the structure
TARGET_SPLITS = ("target_train", "target_test")  # keys of an adaptation run's splits.json


class SectionUnavailable(Exception):
    """A section that cannot be made for this run; the message says why (shown on the page)."""


@dataclasses.dataclass
class ReportData:
    """What the sections are made from: the run, its splits and the model's outputs on its evaluation split.

    When the model could not be run, ``prediction_error`` says why and the sections that need its
    outputs (``predictions``, ``metrics``) are marked not available; the others are still made.
    """

    run: Run
    splits: dict[str, Any]
    split_name: str
    outputs: tuple[interpret.Predictions, dict[str, Any]] | None
    prediction_error: str = ""

    @property
    def predictions(self) -> interpret.Predictions:
        return self._outputs()[0]

    @property
    def metrics(self) -> dict[str, Any]:
        return self._outputs()[1]

    def _outputs(self) -> tuple[interpret.Predictions, dict[str, Any]]:
        if self.outputs is None:
            raise SectionUnavailable(f"the model could not be run on the {self.split_name} images "
                                     f"({self.prediction_error})")
        return self.outputs


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``RUN_DIR/report.html`` (or ``out``) for a finished run folder; return its path.

    Raises CvTransferError when the folder is not a finished run; a section that fails becomes a
    note on the page (and a logged warning) instead.
    """
    if (Path(run_dir) / "config.yaml").is_file():
        own = _write_task_report(Run(run_dir), out)
        if own is not None:
            return own
    data = _load(Path(run_dir))
    run = data.run
    builders: list[tuple[str, str, Callable[[], Markup]]] = [
        ("summary", "Summary", lambda: _summary(data)),
        ("config", "Configuration", lambda: _config_table(run.config)),
        ("data", "Data", lambda: _data_summary(data)),
        ("curves", "Learning curves", lambda: _curves(run)),
        ("confusion", "Confusion matrix", lambda: _confusion(data)),
        ("per-class", "Per-class precision, recall, F1", lambda: _per_class(data.metrics)),
        ("roc", "ROC curves", lambda: _roc(data)),
        ("diagnosis", "Diagnosis", lambda: _diagnosis(run)),
        ("top-losses", "Top losses", lambda: _top_losses(data)),
        ("grad-cam", "Grad-CAM", lambda: _grad_cam(data)),
        ("embedding", "Feature embedding", lambda: _embedding(data)),
    ]
    wanted = run.task.report_sections
    sections = [_section(run, id_, title, build) for id_, title, build in builders if id_ in wanted]
    subtitle = f"{run_title(run)} on {run.config.data}"
    if run.config.target is not None:
        subtitle += f" to {run.config.target}"
    path = write_page(Path(out) if out else run.path / REPORT_FILE, f"Run report: {run.path.name}",
                      f"{subtitle}  ({run.path})", sections)
    log.info("report: %s", path)
    return path


def _write_task_report(run: Run, out: str | Path | None) -> Path | None:
    """The report of a task that makes its sections from the run folder's own files (segmentation,
    detection: :meth:`Task.report_builders`); None for the others."""
    builders = run.task.report_builders(run, run_title(run), training_seconds(run)[0])
    if builders is None:
        return None
    if not (run.path / MODEL_FILE).is_file():
        raise CvTransferError(f"{run.path / MODEL_FILE} is missing: the run has not finished (resume it with --resume)")
    builders.insert(1, ("config", "Configuration", lambda: _config_table(run.config)))
    builders.append(("diagnosis", "Diagnosis", lambda: _diagnosis(run)))
    sections = [_section(run, id_, title, build) for id_, title, build in builders]
    path = write_page(Path(out) if out else run.path / REPORT_FILE, f"Run report: {run.path.name}",
                      f"{run_title(run)} on {run.config.data}  ({run.path})", sections)
    log.info("report: %s", path)
    return path


def write_report_safely(run_dir: str | Path) -> Path | None:
    """:func:`write_report` at the end of a training: any failure is a logged warning, never an exception.

    The run's outputs (model, metrics, curves) are already written when it is called.
    """
    try:
        return write_report(run_dir)
    except Exception as err:
        log.warning("report.html of %s could not be written (%s: %s); the run itself is complete: retry with "
                    "`cvtransfer report %s`", run_dir, type(err).__name__, err, run_dir,
                    exc_info=log.isEnabledFor(logging.DEBUG))
        return None


def _section(run: Run, id_: str, title: str, build: Callable[[], Markup]) -> Section:
    """``build()``'s section, or, when it raises, a note saying the section is not available and why."""
    try:
        return Section(id_, title, build())
    except Exception as err:
        reason = str(err) if isinstance(err, SectionUnavailable) else f"{type(err).__name__}: {err}"
        log.warning("report of %s: %s not available: %s", run.path, title, reason,
                    exc_info=log.isEnabledFor(logging.DEBUG) and not isinstance(err, SectionUnavailable))
        return Section(id_, title, Markup('<p class="note unavailable">{}: not available: {}</p>').format(
            title, reason))


def _load(run_dir: Path) -> ReportData:
    if not run_dir.is_dir():
        raise CvTransferError(f"run folder {run_dir} does not exist")
    run = Run(run_dir)
    for name in ("splits.json", "classes.json", MODEL_FILE):
        if not (run_dir / name).is_file():
            raise CvTransferError(f"{run_dir / name} is missing: the run has not finished (resume it with --resume)")
    splits = read_json(run_dir / "splits.json")
    split_name = next((n for n in ("target_test", "test", "val") if splits.get(n)), None)
    if split_name is None:
        raise CvTransferError(f"{run_dir / 'splits.json'} has no test or val images to report on")
    samples = [(p, int(y)) for p, y in splits[split_name]]
    try:
        predictions = _predict(run, samples)
    except CvTransferError:
        raise
    except Exception as err:
        log.warning("report of %s: the model could not be run (%s: %s)", run_dir, type(err).__name__, err)
        return ReportData(run, splits, split_name, None, f"{type(err).__name__}: {err}")
    known = predictions.labels >= 0
    metrics = classification_metrics(_tensor(predictions.probs[known]), _tensor(predictions.labels[known]),
                                     run.classes)
    return ReportData(run, splits, split_name, (predictions, metrics))


def _predict(run: Run, samples: list[tuple[str, int]]) -> interpret.Predictions:
    from cvtransfer.data.loaders import default_workers
    from cvtransfer.engine.devices import pick_device

    config = run.config
    return interpret.predict_samples(run.model, samples, run.preprocessing, batch_size=config.batch_size,
                                     num_workers=default_workers(config.num_workers),
                                     device=pick_device(config.accelerator), max_pixels=config.max_image_pixels)


def _tensor(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def _summary(data: ReportData) -> Markup:
    metrics, history = data.metrics, data.run.history
    seconds, extraction = training_seconds(data.run)
    auc = metrics["roc_auc"]
    cards = [(f"{metrics['accuracy']:.3f}", "accuracy"), (f"{metrics['balanced_accuracy']:.3f}", "balanced accuracy"),
             (f"{metrics['f1_macro']:.3f}", "macro F1"), ("n/a" if auc is None else f"{auc:.3f}", "ROC-AUC (macro)"),
             (str(metrics["num_samples"]), f"{data.split_name} images"), (str(len(history)), "epochs"),
             ("n/a" if seconds is None else f"{seconds:.1f} s", "training time")]
    timing = (f" Training time includes {extraction:.1f} s of feature extraction (the features are cached: a "
              "second run on the same data and backbone reads them back)." if extraction else "")
    return cards_html(cards) + note(
        f"{run_title(data.run)}. Metrics on the {data.split_name} split, computed from the model saved in "
        f"model.safetensors (the best checkpoint). Accuracy and F1 are fractions from 0 to 1.{timing}")


def _config_table(config: Config) -> Markup:
    defaults = Config()
    groups: dict[str, list[dataclasses.Field]] = {}
    hidden = 0
    for f in dataclasses.fields(Config):
        if applies(f, config):
            groups.setdefault(f.metadata["group"], []).append(f)
        else:
            hidden += 1
    tables = []
    for group, fields in groups.items():
        rows = [(Markup('<span class="{}">{}</span>').format(
                    "changed" if getattr(config, f.name) != getattr(defaults, f.name) else "", f.name),
                 _plain(getattr(config, f.name))) for f in fields]
        tables.append(Markup("<div><h3>{}</h3>{}</div>").format(group, table_html(("option", "value"), rows)))
    command = "adapt" if config.target is not None else "fit"
    return note(f"The resolved config (config.yaml) of this {command} run; options changed from their "
                f"defaults are in bold. {hidden} options that do not apply to it (other commands', other "
                "strategies' or methods') are left out; config.yaml lists them all.") + \
        Markup('<div class="config">{}</div>').format(Markup("").join(tables))


def applies(field: dataclasses.Field, config: Config) -> bool:
    """Whether option ``field`` affects a run of ``config``.

    Fit runs show the training groups, adapt runs also the adaptation group; options whose help starts
    with a strategy or method ("gradual: ...", "adda: ...") only for that strategy or method.
    """
    adaptation = config.target is not None
    group = field.metadata["group"]
    if group not in TRAINING_GROUPS and not (adaptation and group == ADAPT):
        return False
    owners = owner_of(field.name)
    if owners:  # a plug-in's own setting: shown when the run uses that plug-in
        return any(name in active_plugins(config) for _, name in owners)
    prefix = re.match(r"(\w[\w+-]*)( strategy)?: ", field.metadata["help"])
    if prefix is None:
        return field.name != "mlp_dim" or feature_input(config)
    owner = prefix.group(1)
    if owner == "adapt":
        return adaptation
    from cvtransfer.losses import LOSSES
    from cvtransfer.strategies import STRATEGIES

    if owner in STRATEGIES or owner in LOSSES:  # "dann, cdan, adda: ..." style help names its users
        return owner in active_plugins(config)
    return True


def active_plugins(config: Config) -> set[str]:
    """Names of the plug-ins a run of ``config`` uses: its task, strategy and loss terms."""
    from cvtransfer.losses import parse_loss_spec
    from cvtransfer.strategies import get_strategy

    names = {config.task, config.strategy, *(name for name, _ in parse_loss_spec(config.loss))}
    names.update(name for name, _ in get_strategy(config.strategy).terms)
    if config.target is not None:
        names.add(config.method)
        if config.mcc > 0:
            names.add("mcc")
    return names


def _plain(value: Any) -> str:
    return "none" if value is None else str(value)


def _data_summary(data: ReportData) -> Markup:
    classes, splits = data.run.classes, data.splits
    names = [n for n in ("train", "val", "test", *TARGET_SPLITS) if splits.get(n)]
    counts = {n: np.bincount([int(y) for _, y in splits[n] if int(y) >= 0], minlength=len(classes)) for n in names}
    rows = [[name, *(int(counts[n][i]) for n in names)] for i, name in enumerate(classes)]
    rows.append([Markup("<b>total</b>"), *(len(splits[n]) for n in names)])
    body = table_html(("class", *names), rows, numeric=[False] + [True] * len(names))
    body += note(f"Images per class and split (data: {data.run.config.data}). "
                 "Unlabelled target images count in the total only.")
    skipped = splits.get("skipped", [])
    if skipped:
        items = Markup("").join(Markup("<li><code>{}</code>: {}</li>").format(p, why) for p, why in skipped)
        body += Markup("<details><summary>{} file(s) skipped while reading the data</summary><ul>{}</ul></details>"
                       ).format(len(skipped), items)
    else:
        body += note("No file was skipped while reading the data.")
    return body


def _curves(run: Run) -> Markup:
    history = run.history
    if not history:
        return note("No history.csv: this run has no learning curves.")
    title = f"Learning curves: {run_title(run)}"
    if not is_adaptation(run):
        return figure_html(curves_figure(history, title), "learning curves",
                           "Loss (cross-entropy) and accuracy per epoch, training against validation.")
    selection = selection_curve(run.config)
    caption = ("Source cross-entropy and accuracy per epoch (training, and the source validation split), the "
               "accuracy on the labelled target test images where there are any, and the unsupervised target "
               f"score that chooses the kept epoch (--select-by {run.config.select_by}).")
    return figure_html(curves_figure(history, title, selection=selection), "learning curves", caption)


def _confusion(data: ReportData) -> Markup:
    matrix, classes = data.metrics["confusion_matrix"], data.run.classes
    return figures_html(
        figure_html(confusion_figure(matrix, classes), "confusion matrix, counts", "Counts of images."),
        figure_html(confusion_figure(matrix, classes, normalise=True), "confusion matrix, normalised",
                    "Each row divided by its number of images: the diagonal is the recall of the class."),
    ) + note(f"Rows: true class; columns: predicted class ({data.split_name} split).")


def _per_class(metrics: dict[str, Any]) -> Markup:
    per_class = metrics["per_class"]
    present = [name for name, row in per_class.items() if row["support"] > 0]
    worst = min(present, key=lambda name: per_class[name]["f1"]) if len(present) > 1 else None
    rows = [(name, row["precision"], row["recall"], row["f1"], row["support"]) for name, row in per_class.items()]
    row_classes = ["worst" if name == worst else "" for name in per_class]
    table = table_html(("class", "precision", "recall", "F1", "images"), rows, numeric=[False, True, True, True, True],
                       row_classes=row_classes)
    macro = (f"Macro averages over classes with images: precision {metrics['precision_macro']:.3f}, "
             f"recall {metrics['recall_macro']:.3f}, F1 {metrics['f1_macro']:.3f}.")
    return table + note(macro + (f" Lowest F1 (highlighted): {worst}." if worst else ""))


def _roc(data: ReportData) -> Markup:
    predictions = data.predictions
    known = predictions.labels >= 0
    return figure_html(roc_figure(predictions.probs[known], predictions.labels[known], data.run.classes),
                       "ROC curves", "Each class against the rest, scored by its predicted probability.")


def _diagnosis(run: Run) -> Markup:
    result = run_diagnosis(run.config, run.history)
    verdict = Markup('<p><span class="verdict {}">{}</span> {}</p>').format(
        result.verdict.replace(" ", "-"), result.verdict, result.message)
    if not result.signals:
        return verdict
    from cvtransfer.evaluation import diagnosis as rules

    rows = [(name.replace("_", " "), value) for name, value in result.signals.items()]
    thresholds = (f"Rules: overfitting when the accuracy gap exceeds {rules.OVERFIT_GAP:.2f} and the val loss rose "
                  f"more than {rules.VAL_LOSS_RISE:.0%} above its minimum (or the gap exceeds "
                  f"{rules.LARGE_GAP:.2f}); underfitting when the final train accuracy is below "
                  f"{rules.UNDERFIT_TRAIN_ACCURACY:.2f}. Signals are from the last epoch with validation.")
    return verdict + table_html(("signal", "value"), rows, numeric=[False, True]) + note(thresholds)


def _feature_rows(data: ReportData) -> bool:
    """True for a run on a feature file (samples are FILE#ROW): there are no images to show."""
    from cvtransfer.data.domains import is_feature_sample

    return bool(data.predictions.samples) and is_feature_sample(data.predictions.samples[0][0])


def _top_losses(data: ReportData) -> Markup:
    indices = interpret.top_losses(data.predictions, TOP_LOSSES)
    if _feature_rows(data):
        rows = ", ".join(f"{data.predictions.samples[i][0].rpartition('#')[2]}" for i in indices) or "none"
        return note(f"This run reads precomputed features, not images: the most confidently wrong rows are {rows}.")
    if not indices:
        return note(f"No image of the {data.split_name} split is misclassified.")
    fig = interpret.top_losses_figure(data.predictions, indices, data.run.classes, data.run.config.max_image_pixels)
    return figure_html(fig, "top losses", f"The {len(indices)} misclassified {data.split_name} images with the "
                       "highest cross-entropy loss: true label, predicted label and its probability.")


def _grad_cam(data: ReportData) -> Markup:
    from cvtransfer.engine.devices import pick_device

    predictions, classes = data.predictions, data.run.classes
    if _feature_rows(data):
        return note("This run reads precomputed features, not images: there is no image to explain.")
    chosen = interpret.sample_per_class(predictions.labels, GRAD_CAM_IMAGES)
    if not chosen:
        return note("No labelled image to explain.")
    samples = [predictions.samples[i] for i in chosen]
    predicted = [int(predictions.predicted[i]) for i in chosen]
    try:
        images, maps, layer = interpret.grad_cam(data.run.model, samples, data.run.preprocessing, predicted,
                                                 data.run.config.max_image_pixels,
                                                 pick_device(data.run.config.accelerator))
    except ValueError as err:  # no usable feature map (e.g. all 1x1 at a small input): said on the page
        size = data.run.preprocessing.input_size
        raise SectionUnavailable(f"{data.run.config.backbone} at {size} px: {err}") from err
    titles = [f"true {classes[y]}\npredicted {classes[p]}" for (_, y), p in zip(samples, predicted)]
    fig = interpret.grad_cam_figure(images, maps, titles, layer)
    body = figure_html(fig, "Grad-CAM overlays", "Where the model looks: regions that raise the score of the "
                       "predicted class (red high, blue low), one image per class in turn; layer "
                       f"'{layer}', the deepest feature map of at least 2x2 that the class score's gradient "
                       "reaches.")
    blank = int(sum(1 for heat in maps if not np.ptp(heat) > 0))
    if blank:
        body += note(f"{blank} of {len(maps)} maps are blank (constant): for those images no region of layer "
                     f"'{layer}' raises the predicted class's score (Grad-CAM keeps positive evidence only).")
    return body


def _embedding(data: ReportData) -> Markup:
    features, labels, domains = _embedding_inputs(data)
    if len(features) < 5:
        return note("Too few images for a t-SNE embedding (5 needed).")
    points = interpret.embed_2d(features, seed=data.run.config.seed)
    fig = interpret.embedding_figure(points, labels, data.run.classes, domains)
    what = f"{len(points)} {data.split_name} images" if domains is None else \
        f"{int((domains == 'source').sum())} source and {int((domains == 'target').sum())} target images"
    return figure_html(fig, "t-SNE embedding", f"Backbone features of {what} (at most {EMBEDDING_POINTS} per "
                       "domain), projected to 2-D by t-SNE: nearby points have similar features; axes have no unit.")


def _embedding_inputs(data: ReportData) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features and labels to embed; for adaptation runs source and target images with their domain."""
    seed = data.run.config.seed
    target = data.predictions
    if data.split_name not in TARGET_SPLITS:
        keep = interpret.subsample(len(target.labels), EMBEDDING_POINTS, seed)
        return target.features[keep], target.labels[keep], None
    # an adaptation run's "test" is the target test set: the source is its val (else train) split
    source_rows: list[Any] = next((data.splits[n] for n in ("val", "train") if data.splits.get(n)), [])
    source_samples = [(p, int(y)) for p, y in source_rows]
    keep_source = interpret.subsample(len(source_samples), EMBEDDING_POINTS, seed)
    source = _predict(data.run, [source_samples[i] for i in keep_source])
    keep = interpret.subsample(len(target.labels), EMBEDDING_POINTS, seed)
    features = np.concatenate([source.features, target.features[keep]])
    labels = np.concatenate([source.labels, target.labels[keep]])
    domains = np.array(["source"] * len(source.labels) + ["target"] * len(keep))
    return features, labels, domains


class _ReportModule(types.ModuleType):
    """``cvtransfer.report`` is this module and also the API call ``cvtransfer.report(run_dir)``.

    Both names were promised (``cvtransfer.report.write_report`` and ``cvtransfer.report(...)``); a
    function of that name in the package would be replaced by this module as soon as anything
    imported it, so the module itself forwards calls to :func:`cvtransfer.api.report`.
    """

    def __call__(self, run_dir: str | Path, out: str | Path | None = None) -> Path:
        return write_report(run_dir, out)


sys.modules[__name__].__class__ = _ReportModule
