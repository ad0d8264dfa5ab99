"""The embedded demo: its domains, and the whole pipeline at a reduced number of epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cvtransfer.data.demo import make_demo_domains
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


def test_demo_runs_every_strategy(tmp_path: Path) -> None:
    rows = run_demo(tmp_path / "demo", epochs_scale=0.15, report=False)  # reports are tested in test_report.py
    assert [r["strategy"] for r in rows] == ["scratch", "linear", "full", "l2sp"]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["seconds"] > 0 for r in rows)
    assert all((Path(r["run"]) / "metrics.json").is_file() for r in rows)
