"""A run's data splits: discovered once, saved in splits.json, read back when resuming."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from cvtransfer.data.box_splits import DetectionSplits
from cvtransfer.data.domains import DomainSplits, discover_domains
from cvtransfer.data.folders import DatasetSplits, discover, write_skipped
from cvtransfer.data.masks import SegmentationSplits
from cvtransfer.engine.devices import is_main_process
from cvtransfer.errors import ConfigError
from cvtransfer.io import read_json, write_json
from cvtransfer.tasks import get_task

if TYPE_CHECKING:
    from cvtransfer.config import Config

log = logging.getLogger(__name__)

TaskSplits = DatasetSplits | SegmentationSplits | DetectionSplits
SPLITS_FILE = "splits.json"


def load_splits(config: Config, run_dir: Path) -> TaskSplits:
    """The run's splits: read back when resuming (same files, same split), else discovered (the task's way, else
    class folders split by image) and saved."""
    saved = run_dir / SPLITS_FILE
    if saved.is_file():
        return read_splits(config, saved)
    if config.data is None:
        raise ConfigError("no data given: pass DATA_DIR (or data= in the config)")
    task = get_task(config.task)
    splits = task.discover_splits(config) or discover(
        config.data, config.val_split, config.test_split, config.seed, config.max_image_pixels)
    skipped = getattr(splits, "skipped", [])
    if not is_main_process():  # every rank finds the same seeded split; one writes it
        return splits
    write_json(saved, splits.to_dict())
    write_json(run_dir / "classes.json", splits.classes)
    listed = isinstance(splits, DatasetSplits) and bool(skipped)
    if listed:
        write_skipped(splits, run_dir / "skipped.txt")
    log.info("data: %s%s", task.describe_splits(splits),
             f"; {len(skipped)} files skipped (list in {run_dir / 'skipped.txt'})" if listed else "")
    return splits


def read_splits(config: Config, path: Path) -> TaskSplits:
    """A saved splits.json of a run of ``config``'s task."""
    splits: TaskSplits = get_task(config.task).read_splits(read_json(path))
    return splits


def load_domain_splits(config: Config, run_dir: Path) -> DomainSplits:
    """The run's two domains: read back when resuming, else discovered and saved in splits.json."""
    saved = run_dir / SPLITS_FILE
    if saved.is_file():
        return DomainSplits.from_dict(read_json(saved))
    if config.data is None or config.target is None:
        raise ConfigError("adapt needs --source SRC_DIR and --target TGT_DIR")
    splits = discover_domains(config.data, config.target, config.target_test, config.val_split, config.seed,
                              config.max_image_pixels)
    if is_main_process():
        write_json(saved, splits.to_dict())
        write_json(run_dir / "classes.json", splits.classes)
        write_skipped(splits, run_dir / "skipped.txt")
    log.info("domains: %d classes; source %d train, %d val; target %d unlabelled for training, %d labelled for "
             "testing", len(splits.classes), len(splits.train), len(splits.val), len(splits.target_train),
             len(splits.target_test))
    return splits
