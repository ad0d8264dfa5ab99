"""Small helpers of cvtransfer.io."""

from __future__ import annotations

from pathlib import Path

from cvtransfer.io import beside


def test_pictures_beside_a_metrics_file_never_collide() -> None:
    assert beside(Path("run/metrics.json"), "confusion") == Path("run/confusion.png")
    assert beside(Path("run/metrics_external.json"), "examples") == Path("run/examples_external.png")
    kinds = {beside(Path("out/other.json"), kind) for kind in ("confusion", "examples", "per_class_iou")}
    assert kinds == {Path("out/other_confusion.png"), Path("out/other_examples.png"), Path("out/other_per_class_iou.png")}
