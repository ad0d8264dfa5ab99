"""A run's data splits: discovered once, saved in splits.json, read back when resuming."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from cvtransfer.data.box_splits import DetectionSplits, discover_detection_splits
from cvtransfer.data.domains import DomainSplits, discover_domains
from cvtransfer.data.folders import DatasetSplits, discover, write_skipped
from cvtransfer.data.masks import SegmentationSplits, discover_segmentation
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
    """The run's splits: read back when resuming (same files, same split), else discovered and saved."""
    saved = run_dir / SPLITS_FILE
    if saved.is_file():
        return read_splits(config, saved)
    if config.data is None:
        raise ConfigError("no data given: pass DATA_DIR (or data= in the config)")
    if config.task == "segmentation":
        return _segmentation_splits(config, run_dir)
    if config.task == "detection":
        return _detection_splits(config, run_dir)
    splits = get_task(config.task).discover_splits(config) or discover(
        config.data, config.val_split, config.test_split, config.seed, config.max_image_pixels)
    if not is_main_process():  # every rank finds the same seeded split; one writes it
        return splits
    write_json(saved, splits.to_dict())
    write_json(run_dir / "classes.json", splits.classes)
    write_skipped(splits, run_dir / "skipped.txt")
    log.info(
        "data: %d classes; %d train, %d val, %d test images%s", len(splits.classes), len(splits.train),
        len(splits.val), len(splits.test),
        f"; {len(splits.skipped)} files skipped (list in {run_dir / 'skipped.txt'})" if splits.skipped else "",
    )
    return splits


def read_splits(config: Config, path: Path) -> TaskSplits:
    """A saved splits.json of a run of ``config``'s task."""
    kinds: dict[str, type[TaskSplits]] = {"segmentation": SegmentationSplits, "detection": DetectionSplits}
    return kinds.get(config.task, DatasetSplits).from_dict(read_json(path))


def _segmentation_splits(config: Config, run_dir: Path) -> SegmentationSplits:
    assert config.data is not None
    splits = discover_segmentation(config.data, config.val_split, config.test_split, config.seed,
                                   config.ignore_index, config.classes_file or None, config.max_image_pixels)
    if is_main_process():
        write_json(run_dir / SPLITS_FILE, splits.to_dict())
        write_json(run_dir / "classes.json", splits.classes)
    log.info("data: %d classes; %d train, %d val, %d test images with masks (ignore index %d)", len(splits.classes),
             len(splits.train), len(splits.val), len(splits.test), splits.ignore_index)
    return splits


def _detection_splits(config: Config, run_dir: Path) -> DetectionSplits:
    assert config.data is not None
    splits = discover_detection_splits(config.data, config.val_split, config.test_split, config.seed,
                                       config.missing_labels, max_pixels=config.max_image_pixels)
    if is_main_process():
        write_json(run_dir / SPLITS_FILE, splits.to_dict())
        write_json(run_dir / "classes.json", splits.classes)
    log.info("data: %d classes; %d train, %d val, %d test images with %d, %d, %d boxes", len(splits.classes),
             len(splits.train), len(splits.val), len(splits.test),
             *(splits.counts(name)["boxes"] for name in ("train", "val", "test")))
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
