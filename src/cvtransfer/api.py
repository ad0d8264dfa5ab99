"""What ``import cvtransfer`` offers: the same operations as the CLI, on the same Config.

    run = cvtransfer.fit(cvtransfer.Config(data="data/", backbone="resnet50", strategy="gradual"))
    run.evaluate()
    run.predict(["photo.jpg"])
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl

from cvtransfer.config import Config
from cvtransfer.engine.history import read_history
from cvtransfer.engine.progress import console_logging
from cvtransfer.engine.trainer import CHECKPOINT_DIR, check_devices
from cvtransfer.errors import ConfigError, CvTransferError
from cvtransfer.fitting import default_run_dir, is_main_process, load_splits, record_feature_time, train
from cvtransfer.models.backbones import count_parameters, list_backbones
from cvtransfer.comparison import COMPARE_FILE, write_comparison
from cvtransfer.report import write_report, write_report_safely
from cvtransfer.run import Run, finish_run, write_predictions
from cvtransfer.workflows.rank import Ranking, rank_backbones

if TYPE_CHECKING:
    from cvtransfer.workflows.auto import AutoResult

log = logging.getLogger(__name__)


def fit(config: Config | None = None, callbacks: Sequence[pl.Callback] = (), **options: Any) -> Run:
    """Train a model as ``config`` (or ``Config(**options)``) says; return its run folder."""
    config = _config(config, options)
    config, run_dir, existing = _new_run_folder(config, default_run_dir(config))
    with _no_half_made_run(run_dir, existing):
        return _train_and_finish(config, run_dir, callbacks, resume_from=None)


def resume(run_dir: str | Path, callbacks: Sequence[pl.Callback] = (), **overrides: Any) -> Run:
    """Continue an interrupted run from its last checkpoint (``overrides`` such as ``epochs=20`` allowed)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CvTransferError(f"{run_dir} is not a cvtransfer run folder (no config.yaml): nothing to resume")
    console_logging()
    _check_resume_overrides(run_dir, overrides)
    config = Config.load(run_dir / "config.yaml", **overrides)
    check_devices(config)
    if config.target is not None:
        from cvtransfer.adapting import check_adapt_options

        check_adapt_options(config)
    if is_main_process():
        config.save(run_dir / "config.yaml")
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    if not last.is_file():
        log.warning("%s has no checkpoint yet: starting its training from the beginning", run_dir)
    if config.target is not None:  # an adaptation run
        from cvtransfer.adapting import adapt_run

        return adapt_run(config, run_dir, list(callbacks), resume_from=last if last.is_file() else None)
    return _train_and_finish(config, run_dir, callbacks, resume_from=last if last.is_file() else None)


# What a resumed run may change: how long it trains, where and how it runs, what it writes. Anything else
# (data, model, weights, strategy, optimiser, seed, ...) would make the run another one.
RESUMABLE = frozenset({"epochs", "progress", "report", "num_workers", "accelerator", "devices", "num_nodes",
                       "distributed", "cache_dir", "max_image_pixels"})


def _check_resume_overrides(run_dir: Path, overrides: dict[str, Any]) -> None:
    """Refuse, before config.yaml is touched, overrides a resumed run cannot honour."""
    saved = Config.load(run_dir / "config.yaml").to_dict()
    changed = sorted(name for name, value in overrides.items()
                     if name not in RESUMABLE and name in saved and value != saved[name])
    if changed:
        flags = ", ".join("--" + name.replace("_", "-") for name in changed)
        raise ConfigError(f"{flags} cannot change when resuming {run_dir} (only how long and where it trains: "
                          "--epochs, --devices, ...): start a new run with another --out instead")
    done = len(read_history(run_dir / "history.csv"))
    if "epochs" in overrides and overrides["epochs"] < done:
        raise ConfigError(f"{run_dir} has already trained {done} epochs: --epochs must be at least {done}")


def _train_and_finish(config: Config, run_dir: Path, callbacks: Sequence[pl.Callback],
                      resume_from: Path | None) -> Run:
    splits = load_splits(config, run_dir)
    setup = train(config, run_dir, splits, list(callbacks), resume_from=resume_from)
    if not is_main_process():
        return Run(run_dir)
    record_feature_time(run_dir, setup)
    features = setup.val_features if not splits.test else None  # evaluation split is val: reuse its cache
    run = finish_run(run_dir, config, splits.classes, setup.built.model, setup.built.preprocessing, features)
    if config.report:
        write_report_safely(run.path)  # a report problem is a warning: the run is complete
    return run


def evaluate(run_dir: str | Path, data: str | Path | None = None, out: str | Path | None = None,
             max_image_pixels: int | None = None) -> dict[str, Any]:
    """Metrics of a run on ``data`` (default: the run's test split, else val); writes metrics json."""
    return Run(run_dir, max_image_pixels).evaluate(data, out)


def predict(run_dir: str | Path, paths: Sequence[str | Path], top_k: int = 1,
            out: str | Path | None = None, max_image_pixels: int | None = None) -> list[dict[str, Any]]:
    """Predicted label and probability (and top-k) for images or folders; optionally written as CSV."""
    rows = Run(run_dir, max_image_pixels).predict(paths, top_k)
    if out is not None:
        write_predictions(rows, out)
    return rows


def backbones(pattern: str | None = None) -> list[dict[str, Any]]:
    """Backbone names matching ``pattern`` with parameter counts and default input size."""
    rows = []
    for name in list_backbones(pattern):
        params, size = count_parameters(name)
        rows.append({"name": name, "params": params, "input_size": size})
    return rows


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
    return rank_backbones(_config(config, options))


def auto(config: Config | None = None, **options: Any) -> AutoResult:
    """Choose backbone and strategy from the data, train them and a from-scratch baseline; decisions.md in ``out``."""
    from cvtransfer.workflows.auto import run_auto  # automatic.py builds on this module's fit

    return run_auto(_config(config, options))


def adapt(config: Config | None = None, callbacks: Sequence[pl.Callback] = (), **options: Any) -> Run:
    """Adapt from labelled ``data`` (the source) to unlabelled ``target``; return the run folder.

    ``cvtransfer.adapt(data="mnist/", target="usps/", method="dann", backbone="lenet", weights="none")``.
    Options not given take adapt's defaults (SGD, lr 0.01, inv schedule, 20 epochs; see ADAPT_DEFAULTS);
    a ``config`` is used as it is.
    """
    from cvtransfer.adapting import adapt_run, adaptation_config, check_adapt_options, default_adapt_dir

    config = config.replace(**options) if config is not None else Config(**adaptation_config(options))
    if config.target is None or config.data is None:
        raise ConfigError("adapt needs the source (data=/--source) and the target (target=/--target)")
    check_adapt_options(config)  # before the run folder exists
    config, run_dir, existing = _new_run_folder(config, default_adapt_dir(config))
    with _no_half_made_run(run_dir, existing):
        return adapt_run(config, run_dir, list(callbacks))


def shift(source: str | Path, target: str | Path, config: Config | None = None, out: str | Path | None = None,
          **options: Any) -> dict[str, Any]:
    """MMD, proxy A-distance and Wasserstein distance between two domains in a backbone's features.

    Written to ``out``/shift.json when ``out`` is given. ``cvtransfer.shift("a/", "b/", backbone="resnet18")``.
    """
    from cvtransfer.adapting import SHIFT_FILE, measure_shift
    from cvtransfer.io import write_json

    result = measure_shift(_config(config, options), source, target)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / SHIFT_FILE, result)
    return result


def _new_run_folder(config: Config, default: Path) -> tuple[Config, Path, set[Path] | None]:
    """The run folder (``config.out``, else ``default``), created with its config.yaml; refused if it holds a run.

    Also returns what the folder held before (None: it did not exist), for :func:`_no_half_made_run`.
    """
    run_dir = Path(config.out) if config.out else default
    config = config.replace(out=str(run_dir))
    console_logging()
    check_devices(config)  # before the folder exists: a refused run leaves nothing behind
    existing = set(run_dir.iterdir()) if run_dir.is_dir() else None
    if is_main_process():
        if (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir} already holds a run: resume it with --resume {run_dir} or choose another --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.yaml")
    return config, run_dir, existing


@contextmanager
def _no_half_made_run(run_dir: Path, existing: set[Path] | None) -> Iterator[None]:
    """Undo a new run folder when a user error stops the run before any epoch finished.

    Bad data or an unknown backbone are found after the folder is made; left behind, its config.yaml
    would make the corrected command ask for --resume. A folder with a checkpoint anywhere (an epoch
    finished, or ADDA's source stage) is kept: finished work is never lost.
    """
    try:
        yield
    except CvTransferError:
        if is_main_process() and run_dir.is_dir() and not any(run_dir.rglob("*.ckpt")):
            if existing is None:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                for entry in set(run_dir.iterdir()) - existing:
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
        raise


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
