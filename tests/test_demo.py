"""The embedded demo: its domains, and the whole pipeline at a reduced number of epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvtransfer import Config, ConfigError
from cvtransfer.data.demo import make_demo_domains
from cvtransfer.workflows import demo
from cvtransfer.workflows.demo import run_demo


def test_demo_domains(tmp_path: Path) -> None:
    domains = make_demo_domains(tmp_path)
    source = list(domains["source"].rglob("*.png"))
    counts = {split: len(list((domains["target"] / split).rglob("*.png"))) for split in ("train", "val", "test")}
    assert len(source) == 898 and counts["train"] == 100 and counts["val"] == 50
    assert len(source) + sum(counts.values()) == 1797  # each sklearn digit in exactly one domain
    grey = np.asarray(Image.open(source[0]))
    colour = np.asarray(Image.open(next((domains["target"] / "test").rglob("*.png"))))
    assert grey.ndim == 2 and colour.shape == (32, 32, 3) and colour.std(axis=2).mean() > 5


def test_demo_runs_every_strategy_and_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole demo at a few epochs, from the real packaged ImageNet weights (make test installs them)."""
    monkeypatch.setitem(demo.ADAPTATION, "iters_per_epoch", 5)
    rows = run_demo(tmp_path / "demo", epochs_scale=0.05, report=False)  # reports are tested in test_report.py
    assert [(r["part"], r["name"]) for r in rows] == (
        [("transfer from ImageNet", name) for name, _ in demo.STRATEGIES]
        + [("domain adaptation", method) for method in demo.METHODS])
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["seconds"] > 0 for r in rows)
    assert all((Path(r["run"]) / "metrics.json").is_file() for r in rows)
    pretrained = Config.load(Path(rows[1]["run"]) / "config.yaml")
    assert (pretrained.backbone, pretrained.weights) == ("tf_efficientnet_lite0", "imagenet")


def test_demo_replaces_only_its_own_folder(tmp_path: Path) -> None:
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="was not made by cvtransfer demo"):
        run_demo(kept)
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


def test_demo_replaces_the_folder_of_an_earlier_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder written by a demo before the marker existed (its data/source and data/target) is replaced."""
    earlier = tmp_path / "demo_run"
    (earlier / "data" / "source").mkdir(parents=True)
    (earlier / "data" / "target").mkdir()
    (earlier / "compare.html").write_text("old")
    monkeypatch.setattr(demo, "STRATEGIES", demo.STRATEGIES[1:2])  # linear only: the folder handling is tested
    monkeypatch.setattr(demo, "METHODS", ())
    rows = run_demo(earlier, epochs_scale=0.02, report=False)
    assert [r["name"] for r in rows] == ["linear"] and not (earlier / "compare.html").exists()
    assert (earlier / demo.MARKER).is_file()
