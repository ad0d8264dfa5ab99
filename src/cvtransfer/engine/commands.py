"""The training commands on top of the runner: fit, adapt and resume, each in its run folder.

A new run gets its folder only once its options passed every check, and loses it again when a user
error stops it before any checkpoint exists; a resumed run may change only how long and where it
trains. ``cvtransfer.api`` and the workflows (auto, rank, demo) call these.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from cvtransfer.config import Config
from cvtransfer.engine import runner
from cvtransfer.engine.checks import check_adapt_options, check_options, default_adapt_dir, default_run_dir
from cvtransfer.engine.devices import is_main_process
from cvtransfer.engine.progress import console_logging
from cvtransfer.engine.run_lock import locked
from cvtransfer.engine.trainer import CHECKPOINT_DIR, check_devices
from cvtransfer.errors import ConfigError, CvTransferError
from cvtransfer.evaluation.history import read_history
from cvtransfer.run import Run

log = logging.getLogger(__name__)


def fit_run(config: Config, callbacks: Sequence[pl.Callback] = ()) -> Run:
    """Train ``config`` on its labelled data into a new run folder (``config.out`` or a default one)."""
    if config.target is not None:
        raise ConfigError("fit trains on labelled images only: use cvtransfer adapt for a --target domain")
    check_options(config)  # before the run folder exists
    with new_run_folder(config, default_run_dir(config)) as (config, run_dir):
        return runner.run(config, run_dir, list(callbacks))


def adapt_run(config: Config, callbacks: Sequence[pl.Callback] = ()) -> Run:
    """Adapt from ``config.data`` (labelled source) to ``config.target`` into a new run folder."""
    if config.target is None or config.data is None:
        raise ConfigError("adapt needs the source (data=/--source) and the target (target=/--target)")
    check_adapt_options(config)  # before the run folder exists
    with new_run_folder(config, default_adapt_dir(config)) as (config, run_dir):
        return runner.run(config, run_dir, list(callbacks))


def resume_run(run_dir: str | Path, callbacks: Sequence[pl.Callback] = (), **overrides: Any) -> Run:
    """Continue an interrupted run from its last checkpoint (``overrides`` such as ``epochs=20`` allowed)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CvTransferError(f"{run_dir} is not a cvtransfer run folder (no config.yaml): nothing to resume")
    console_logging()
    check_resume_overrides(run_dir, overrides)
    config = Config.load(run_dir / "config.yaml", **overrides)
    check_devices(config)
    check_options(config)
    with locked(run_dir) if is_main_process() else nullcontext():
        if is_main_process():
            remove_partial_files(run_dir)
            config.save(run_dir / "config.yaml")
        last = run_dir / CHECKPOINT_DIR / "last.ckpt"
        if not last.is_file():
            log.warning("%s has no checkpoint yet: starting its training from the beginning", run_dir)
        return runner.run(config, run_dir, list(callbacks), resume_from=last if last.is_file() else None)


# What a resumed run may change: how long it trains, where and how it runs, what it writes. Anything else
# (data, model, weights, strategy, optimiser, seed, ...) would make the run another one.
RESUMABLE = frozenset({"epochs", "progress", "report", "num_workers", "accelerator", "devices", "num_nodes",
                       "distributed", "cache_dir", "max_image_pixels", "in_memory", "memory_limit_mb"})


def check_resume_overrides(run_dir: Path, overrides: dict[str, Any]) -> None:
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


def remove_partial_files(run_dir: Path) -> None:
    """Delete what killed atomic writes left behind (``.<name>.<random>.tmp``, a checkpoint's size each).

    Called with the folder's lock held: no other command is writing there.
    """
    for leftover in run_dir.rglob(".*.tmp"):
        if leftover.is_file():
            log.info("removing %s, left by an interrupted write", leftover)
            leftover.unlink(missing_ok=True)


@contextmanager
def new_run_folder(config: Config, default: Path) -> Iterator[tuple[Config, Path]]:
    """The run folder (``config.out``, else ``default``), locked and given its config.yaml, for the block.

    Refused if it holds a run or another command holds it; undone (:func:`no_half_made_run`) when a user
    error stops the block before any checkpoint exists.
    """
    run_dir = Path(config.out) if config.out else default
    config = config.replace(out=str(run_dir))
    console_logging()
    check_devices(config)  # before the folder exists: a refused run leaves nothing behind
    if not is_main_process():  # under torchrun, rank 0 makes and locks the folder
        yield config, run_dir
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file: choose a folder")
    refuse_out_inside_data(config, run_dir)
    existing = set(run_dir.iterdir()) if run_dir.is_dir() else None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {run_dir} cannot be created ({err.strerror}): choose another folder") from None
    with locked(run_dir), no_half_made_run(run_dir, existing):
        if (run_dir / "config.yaml").is_file():
            raise ConfigError(f"{run_dir} already holds a run: resume it with --resume {run_dir} or choose another --out")
        config.save(run_dir / "config.yaml")
        yield config, run_dir


def refuse_out_inside_data(config: Config, run_dir: Path) -> None:
    """A run folder inside an image folder would be read back as part of the data (its plots as images)."""
    out = run_dir.resolve()
    for option, data in (("data", config.data), ("target", config.target), ("target_test", config.target_test)):
        if data is None or not Path(data).is_dir():
            continue
        root = Path(data).resolve()
        if out == root or root in out.parents:
            raise ConfigError(f"--out {run_dir} is inside the {option} folder {data}: its files would be read as "
                              "images by the next run; choose a folder outside the data")


@contextmanager
def no_half_made_run(run_dir: Path, existing: set[Path] | None) -> Iterator[None]:
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
