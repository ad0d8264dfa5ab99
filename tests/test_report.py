"""report.html of a run folder: every section, inline images only, numbers matching metrics.json, errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import cvtransfer
from cvtransfer.errors import CvTransferError
from cvtransfer.evaluation import interpret
from cvtransfer.report import REPORT_FILE, SECTIONS, write_report
from tests.conftest import write_class_images


def sections_of(html: str) -> dict[str, str]:
    """Section id -> its HTML."""
    parts = re.split(r'<section id="([^"]+)">', html)
    return {parts[i]: parts[i + 1].split("</section>")[0] for i in range(1, len(parts), 2)}


def copy_run(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


@pytest.fixture
def report_html(finished_report: Path) -> str:
    return finished_report.read_text()


def test_report_has_every_section_with_inline_figures(finished_run: Path, report_html: str) -> None:
    html = report_html
    sections = sections_of(html)
    assert list(sections) == list(SECTIONS)
    metrics = json.loads((finished_run / "metrics.json").read_text())
    wrong = metrics["accuracy"] < 1.0
    figures = {"curves": 1, "confusion": 2, "roc": 1, "top-losses": int(wrong), "grad-cam": 1, "embedding": 1}
    for name, body in sections.items():
        assert body.count('src="data:image/png;base64,') == figures.get(name, 0), name
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<script" not in html and "<link" not in html


def test_report_numbers_match_the_run(finished_run: Path, report_html: str) -> None:
    sections = sections_of(report_html)
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert f"<b>{metrics['accuracy']:.3f}</b><span>accuracy" in sections["summary"]
    for name, row in metrics["per_class"].items():
        cells = [f'<td class="num">{row[k]:.3f}</td>' for k in ("precision", "recall", "f1")]
        assert re.search(rf"<td class=\"\">{name}</td>\s*" + r"\s*".join(cells), sections["per-class"]), name
    assert '<span class="changed">backbone</span></td><td class="">tinycnn' in sections["config"]
    assert re.search(r"<td class=\"\">a</td><td class=\"num\">10</td><td class=\"num\">4</td><td class=\"num\">4",
                     sections["data"])
    verdict = metrics["diagnosis"]["verdict"]
    assert f'class="verdict {verdict.replace(" ", "-")}">{verdict}' in sections["diagnosis"]
    assert "accuracy gap" in sections["diagnosis"]


def test_adaptation_run_embedding_is_coloured_by_domain(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path)
    write_class_images(tmp_path / "target", {"a": 3, "b": 3, "c": 3}, seed=7)
    target = [[str(p), "abc".index(p.parent.name)] for p in sorted((tmp_path / "target").rglob("*.png"))]
    splits = json.loads((run / "splits.json").read_text())
    splits.update(target_train=[[p, -1] for p, _ in target], target_test=target)
    (run / "splits.json").write_text(json.dumps(splits))
    assert write_report(run) == run / REPORT_FILE
    sections = sections_of((run / REPORT_FILE).read_text())
    assert "<b>9</b><span>target_test images</span>" in sections["summary"]
    assert "<th class=\"num\">target_train</th><th class=\"num\">target_test</th>" in sections["data"]
    assert "12 source and 9 target images" in sections["embedding"]


def test_report_is_both_the_module_and_the_api_call() -> None:
    import cvtransfer.report as module
    from cvtransfer import api

    assert cvtransfer.report is module and cvtransfer.report.write_report is write_report
    assert callable(cvtransfer.report) and api.report.__doc__


def test_report_errors_name_the_folder(finished_run: Path, tmp_path: Path) -> None:
    with pytest.raises(CvTransferError, match="run folder .*missing_run does not exist"):
        write_report(tmp_path / "missing_run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CvTransferError, match="empty is not a cvtransfer run folder"):
        write_report(tmp_path / "empty")
    run = copy_run(finished_run, tmp_path)
    (run / "model.safetensors").unlink()
    with pytest.raises(CvTransferError, match="model.safetensors is missing: the run has not finished"):
        write_report(run)


def test_top_losses_are_the_most_confidently_wrong() -> None:
    samples = [("x", 0), ("y", 1), ("z", 0), ("w", 1)]
    probs = np.array([[0.1, 0.9], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    predictions = interpret.Predictions(samples, probs, np.zeros((4, 2)))
    assert interpret.top_losses(predictions, 5) == [0, 3, 2]  # sample 1 is right; 0.1 < 0.3 < 0.4 on the truth


def test_grad_cam_maps_follow_the_input(finished_run: Path) -> None:
    run = cvtransfer.Run(finished_run)
    samples = json.loads((finished_run / "splits.json").read_text())["test"][:3]
    images, maps, layer = interpret.grad_cam(run.model, [tuple(s) for s in samples], run.preprocessing, [0, 1, 2],
                                             run.config.max_image_pixels)
    assert images.shape == (3, 16, 16, 3) and maps.shape == (3, 16, 16) and layer
    assert 0.0 <= maps.min() and maps.max() <= 1.0 and maps.std() > 0
