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
from tests.conftest import tiny_config, write_class_images, write_split_folders


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
    with pytest.raises(CvTransferError, match=r"run folder .*missing_run does not exist"):
        write_report(tmp_path / "missing_run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CvTransferError, match="empty is not a cvtransfer run folder"):
        write_report(tmp_path / "empty")
    run = copy_run(finished_run, tmp_path)
    (run / "model.safetensors").unlink()
    with pytest.raises(CvTransferError, match=r"model\.safetensors is missing: the run has not finished"):
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
    assert maps.min() >= 0.0 and maps.max() <= 1.0 and maps.std() > 0


def write_feature_domain(file: Path, count: int, shift: float, seed: int) -> None:
    """Three Gaussian classes in 12 dimensions (a feature file); the domain moves every point by ``shift``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), count)
    features = np.eye(3, 12)[labels] * 4.0 + rng.normal(size=(len(labels), 12)) + shift
    np.savez(file, features=features.astype(np.float32), labels=labels)


def feature_adaptation_run(folder: Path, report: bool = True) -> Path:
    """A finished 2-epoch dann run on two feature files (an MLP stands in for the backbone)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_feature_domain(folder / "source.npz", 20, 0.0, seed=0)
    write_feature_domain(folder / "target.npz", 10, 1.0, seed=1)
    config = tiny_config(folder / "source.npz", folder / "run", target=str(folder / "target.npz"),
                         method="dann", mlp_dim=16, bottleneck_dim=8, discriminator_dim=8, iters_per_epoch=4,
                         selection_samples=20, shift_samples=20, optimizer="sgd", lr=0.01, scheduler="inv",
                         report=report)
    return cvtransfer.adapt(config).path


def option_names(config_section: str) -> set[str]:
    return set(re.findall(r'<span class="(?:changed)?">(\w+)</span>', config_section))


def test_fit_report_shows_only_the_options_of_fit(report_html: str) -> None:
    shown = option_names(sections_of(report_html)["config"])
    assert {"data", "backbone", "strategy", "lr", "epochs", "out"} <= shown
    # adaptation, rank/auto and other strategies' options do not apply to a full fine-tuning run
    assert not shown & {"target", "method", "trade_off", "select_by", "budget", "backbones", "rank_by",
                        "head", "freeze", "l2sp_alpha", "unfreeze_every"}
    assert "left out" in sections_of(report_html)["config"]


def test_feature_file_adaptation_report_names_the_mlp_method_and_options(tmp_path: Path) -> None:
    run = feature_adaptation_run(tmp_path)
    html = (run / REPORT_FILE).read_text()
    assert "MLP on features (12 dims) / dann (full) on " in html and "tinycnn / full" not in html
    sections = sections_of(html)
    shown = option_names(sections["config"])
    assert {"target", "method", "trade_off", "select_by", "bottleneck_dim", "mlp_dim"} <= shown
    assert not shown & {"budget", "backbones", "head", "source_epochs"}  # source_epochs: adda only
    assert "--select-by entropy" in sections["curves"] and sections["curves"].count("data:image/png") == 1


def test_cnn_at_32_px_fits_and_reports_grad_cam_of_a_spatial_layer(tmp_path: Path) -> None:
    """resnet18's last map is 1x1 at 32 px: Grad-CAM walks back to layer3 (2x2) instead of failing the run."""
    data = write_split_folders(tmp_path / "data", 4, 2, 2, classes="ab")
    config = tiny_config(data, tmp_path / "run", backbone="resnet18", image_size=32, strategy="linear",
                         epochs=1, report=True)
    run = cvtransfer.fit(config)
    sections = sections_of((run.path / REPORT_FILE).read_text())
    assert sections["grad-cam"].count("data:image/png") == 1 and "not available" not in sections["grad-cam"]
    assert "layer &#39;layer4&#39;" not in sections["grad-cam"]  # 1x1 at 32 px: an earlier map is used
    extraction = json.loads((run.path / "feature_extraction.json").read_text())
    assert extraction["seconds"] > 0 and extraction["dims"] == 512
    assert f"includes {extraction['seconds']:.1f} s of feature extraction" in sections["summary"]


def test_a_failing_section_is_a_note_and_a_warning(finished_run: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError(None)

    monkeypatch.setattr(interpret, "grad_cam", broken)
    run = copy_run(finished_run, tmp_path)
    with caplog.at_level("WARNING", logger="cvtransfer.report"):
        write_report(run)
    sections = sections_of((run / REPORT_FILE).read_text())
    assert list(sections) == list(SECTIONS)
    assert "Grad-CAM: not available: KeyError: None" in sections["grad-cam"]
    assert sections["embedding"].count("data:image/png") == 1  # the sections after it are still made
    assert any("Grad-CAM not available" in r.getMessage() for r in caplog.records)


def test_report_of_a_model_that_cannot_run_keeps_the_other_sections(finished_run: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import cvtransfer.report as report_module

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("shapes do not match")

    monkeypatch.setattr(report_module, "_predict", broken)
    run = copy_run(finished_run, tmp_path)
    sections = sections_of(write_report(run).read_text())
    assert ("Summary: not available: the model could not be run on the test images (RuntimeError: shapes do "
            "not match)") in sections["summary"]
    assert "not available" in sections["grad-cam"] and "not available" in sections["roc"]
    assert sections["curves"].count("data:image/png") == 1 and "tinycnn" in sections["config"]


def test_a_report_failure_does_not_fail_the_finished_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    import cvtransfer.report as report_module

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no report today")

    monkeypatch.setattr(report_module, "_load", broken)
    write_class_images(tmp_path / "data", {"a": 6, "b": 6})
    with caplog.at_level("WARNING", logger="cvtransfer.report"):
        run = cvtransfer.fit(tiny_config(tmp_path / "data", tmp_path / "run", epochs=1, report=True))
    assert (run.path / "metrics.json").is_file() and (run.path / "model.safetensors").is_file()
    assert not (run.path / REPORT_FILE).exists()
    messages = [r.getMessage() for r in caplog.records]
    assert any("no report today" in m and "cvtransfer report" in m for m in messages)
