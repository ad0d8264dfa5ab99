"""Small helpers of cvtransfer.io."""

from __future__ import annotations

from pathlib import Path

from cvtransfer.io import beside


def test_pictures_beside_a_metrics_file_never_collide() -> None:
    assert beside(Path("run/metrics.json"), "confusion") == Path("run/confusion.png")
    assert beside(Path("run/metrics_external.json"), "examples") == Path("run/examples_external.png")
    kinds = {beside(Path("out/other.json"), kind) for kind in ("confusion", "examples", "per_class_iou")}
    assert kinds == {Path("out/other_confusion.png"), Path("out/other_examples.png"), Path("out/other_per_class_iou.png")}


def test_output_stems_are_distinct_and_keep_the_first_name() -> None:
    from cvtransfer.io import output_stems

    files = ["a/x.jpg", "b/x.png", "c/y.jpg", "x_2.jpg", "d/x.jpg"]
    assert output_stems(files) == ["x", "x_2", "y", "x_2_2", "x_3"]
    assert len(set(output_stems(files))) == len(files)

