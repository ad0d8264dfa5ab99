"""compare.html: one row per run from its metrics.json and history, the best cells highlighted, errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import cvtransfer
from cvtransfer.comparison import COMPARE_SECTIONS, compare_rows
from cvtransfer.errors import CvTransferError


def weaker_copy(run: Path, folder: Path, accuracy: float) -> Path:
    """A copy of ``run`` whose metrics.json says ``accuracy`` and whose epochs took 100 s each."""
    copy = Path(shutil.copytree(run, folder))
    metrics = json.loads((copy / "metrics.json").read_text())
    (copy / "metrics.json").write_text(json.dumps({**metrics, "accuracy": accuracy}))
    lines = (copy / "history.csv").read_text().splitlines()
    column = lines[0].split(",").index("seconds")
    rows = [",".join("100" if i == column else v for i, v in enumerate(line.split(","))) for line in lines[1:]]
    (copy / "history.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    return copy


def test_compare_highlights_the_best_of_each_column(finished_run: Path, tmp_path: Path) -> None:
    metrics = json.loads((finished_run / "metrics.json").read_text())
    slow = weaker_copy(finished_run, tmp_path / "runs" / "slow", metrics["accuracy"] - 0.2)
    fast = Path(shutil.copytree(finished_run, tmp_path / "runs" / "fast"))
    out = cvtransfer.compare([slow, fast], out=tmp_path / "compare.html")
    html = out.read_text()
    assert re.findall(r'<section id="([^"]+)">', html) == list(COMPARE_SECTIONS)
    rows = re.findall(r"<tr class=\"\">(.*?)</tr>", html)
    assert [re.search(r"<td class=\"\">(\w+)</td>", row).group(1) for row in rows] == ["slow", "fast"]
    best = [re.findall(r'<td class="num best">([^<]+)</td>', row) for row in rows]
    assert f"{metrics['accuracy']:.3f}" in best[1] and f"{metrics['accuracy'] - 0.2:.3f}" not in best[0]
    assert "200.000" not in best[0]  # the slow run's 2 x 100 s is not the shortest time
    assert "Most accurate: fast" in html and html.count('src="data:image/png;base64,') == 1


def test_compare_rows_read_the_run_folders(finished_run: Path) -> None:
    [row] = compare_rows([finished_run])
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert row["name"] == "run" and row["backbone"] == "tinycnn" and row["strategy"] == "full"
    assert row["accuracy"] == metrics["accuracy"] and row["f1_macro"] == metrics["f1_macro"]
    assert row["seconds"] > 0 and len(row["history"]) == 2


def test_compare_refuses_unfinished_runs(finished_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    (run / "metrics.json").unlink()
    with pytest.raises(CvTransferError, match=r"metrics.json is missing: the run has not finished"):
        cvtransfer.compare([finished_run, run], out=tmp_path / "c.html")
    with pytest.raises(CvTransferError, match="at least one run folder"):
        cvtransfer.compare([], out=tmp_path / "c.html")


def test_compare_names_model_and_method_and_counts_feature_extraction(tmp_path: Path) -> None:
    """Logistic and SVM probes and a feature-file adaptation run are told apart; probes count extraction."""
    from tests.conftest import tiny_config, write_class_images
    from tests.test_report import feature_adaptation_run

    write_class_images(tmp_path / "data", {"a": 6, "b": 6})
    runs = [cvtransfer.fit(tiny_config(tmp_path / "data", tmp_path / "runs" / head, strategy="linear",
                                       head=head, epochs=1)).path for head in ("logistic", "svm")]
    runs.append(feature_adaptation_run(tmp_path / "adapt", report=False))
    rows = compare_rows(runs)
    assert [row["method"] for row in rows] == ["linear (logistic head)", "linear (svm head)", "dann (full)"]
    assert [row["model"] for row in rows] == ["tinycnn", "tinycnn", "MLP on features (12 dims)"]
    for row, run in zip(rows[:2], runs):
        extraction = json.loads((run / "feature_extraction.json").read_text())["seconds"]
        epochs = sum(r["seconds"] for r in row["history"])
        assert row["feature_seconds"] == extraction > 0
        assert row["seconds"] == pytest.approx(epochs + extraction)
    assert rows[2]["feature_seconds"] == 0  # adaptation trains the network: nothing extracted ahead
    html = cvtransfer.compare(runs, out=tmp_path / "compare.html").read_text()
    header = re.search(r"<thead><tr>(.*?)</tr></thead>", html).group(1)
    assert re.findall(r"<th>(\w+)</th>", header) == ["run", "model", "method", "weights", "split"]
    for label in ("linear (svm head)", "linear (logistic head)", "dann (full)", "MLP on features (12 dims)"):
        assert f'<td class="">{label}</td>' in html
    assert "includes the feature extraction" in html
