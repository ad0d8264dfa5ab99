"""The real small backbones users pick, through fit + report from the CLI, at a small and a non-default size.

Random-init weights (no download); tiny data; one epoch. What is checked is that each family trains,
exports, reloads at its size, evaluates and gets a complete report, Grad-CAM included (a map, or a
note saying why there is none): the defects of small inputs (1x1 feature maps, ViT/Swin built at 224)
showed up only with these backbones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import cvtransfer
from tests.conftest import write_split_folders
from tests.test_cli import run_cli

CASES = [  # (backbone, --image-size, --strategy): a small size and a non-default size for each family
    ("resnet18", 32, "linear"),
    ("resnet18", 72, "full"),
    ("efficientnet_b0", 32, "full"),
    ("efficientnet_b0", 80, "linear"),
    ("vit_tiny_patch16_224", 32, "full"),
    ("vit_tiny_patch16_224", 64, "linear"),
    ("swin_tiny_patch4_window7_224", 56, "linear"),
    ("swin_tiny_patch4_window7_224", 64, "full"),
    ("convnext_atto", 32, "full"),
    ("convnext_atto", 96, "linear"),
]


@pytest.fixture(scope="module")
def few_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ val/ test/, two classes, a handful of 40 px images (resized to each case's size)."""
    return write_split_folders(tmp_path_factory.mktemp("few"), 4, 2, 2, classes="ab", size=40)


@pytest.mark.parametrize(("backbone", "size", "strategy"), CASES, ids=[f"{b}-{s}-{t}" for b, s, t in CASES])
def test_fit_and_report(backbone: str, size: int, strategy: str, few_images: Path, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    code, out, err = run_cli(
        ["fit", str(few_images), "--backbone", backbone, "--weights", "none", "--image-size", str(size),
         "--strategy", strategy, "--epochs", "1", "--batch-size", "4", "--no-progress", "--accelerator", "cpu",
         "--num-workers", "0", "--augment", "light", "--out", str(run_dir)], monkeypatch, capsys)
    assert code == 0, err
    assert f"run folder: {run_dir}" in out
    run = cvtransfer.Run(run_dir)
    assert run.preprocessing.input_size == size
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_samples"] == 4
    assert cvtransfer.evaluate(run_dir)["accuracy"] == pytest.approx(metrics["accuracy"])  # reloaded at its size
    page = (run_dir / "report.html").read_text()
    assert "Grad-CAM" in page
    assert re.search(r"<img[^>]+alt=\"Grad-CAM overlays\"", page), "no Grad-CAM map in the report"
    assert "not available" not in page  # every section of the report was made
    code, out, err = run_cli(["report", str(run_dir)], monkeypatch, capsys)
    assert code == 0, err
