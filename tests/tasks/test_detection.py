"""--task detection end to end on tiny generated images with drawn rectangles: training through the one
engine, the run folder and mAP, prediction's boxes, resume, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cvtransfer
from cvtransfer.data.boxes import box_image
from cvtransfer.evaluation.detection_plots import image_f1, match
from cvtransfer.evaluation.detection_run import detection_metrics
from tests.conftest import tiny_config
from tests.test_bad_inputs import run_cli

COLOURS = {0: (230, 40, 40), 1: (40, 200, 40)}  # class 0 red, class 1 green


def write_detection_data(root: Path, count: int = 12, size: tuple[int, int] = (72, 96), seed: int = 0,
                         background: int = 2) -> Path:
    """YOLO layout (images/, labels/, classes.txt): a red and a green rectangle per image on grey noise; the
    last ``background`` images have no rectangle (empty label files)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    height, width = size
    for i in range(count):
        pixels = (110 + rng.integers(0, 30, (height, width, 3))).astype(np.uint8)
        lines = []
        for label in (0, 1) if i < count - background else ():
            h, w = rng.integers(16, 30), rng.integers(16, 30)
            top, left = rng.integers(0, height - h), rng.integers(0, width - w)
            pixels[top:top + h, left:left + w] = COLOURS[label]
            lines.append(f"{label} {(left + w / 2) / width:.6f} {(top + h / 2) / height:.6f} {w / width:.6f} "
                         f"{h / height:.6f}")
        Image.fromarray(pixels).save(root / "images" / f"im{i:02d}.png")
        (root / "labels" / f"im{i:02d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    (root / "classes.txt").write_text("red\ngreen\n")
    return root


def det_config(data: Path, out: Path, **options: object) -> cvtransfer.Config:
    values: dict[str, object] = dict(task="detection", backbone="resnet18", image_size=64, batch_size=4, epochs=2,
                                     lr=1e-3, optimizer="adamw", val_split=0.2, test_split=0.2)
    values.update(options)
    return tiny_config(data, out, **values)


@pytest.fixture(scope="module")
def det_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_detection_data(tmp_path_factory.mktemp("det") / "data")


@pytest.fixture(scope="module")
def det_run(det_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("detrun") / "run"
    return cvtransfer.fit(det_config(det_data, out, epochs=2, report=True)).path


def test_a_run_folder_with_map(det_run: Path) -> None:
    import json

    metrics = json.loads((det_run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_images"] >= 2
    assert 0.0 <= metrics["map"] <= 1.0 and [row["class"] for row in metrics["per_class"]] == ["red", "green"]
    assert metrics["num_boxes"] == sum(row["boxes"] for row in metrics["per_class"])
    for name in ("pr_curve.png", "examples.png", "curves.png", "report.html", "model.safetensors"):
        assert (det_run / name).is_file(), name
    history = (det_run / "history.csv").read_text().splitlines()
    assert "val_map" in history[0] and "train_loss_classifier" in history[0] and len(history) == 3
    assert json.loads((det_run / "classes.json").read_text()) == ["red", "green"]


def test_predict_writes_boxes_json_and_drawn_images(det_run: Path, det_data: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from cvtransfer.run import Run

    run = Run(det_run)
    (tmp_path / "other").mkdir()
    same_stem = shutil.copy(det_data / "images" / "im00.png", tmp_path / "other" / "im00.png")
    files = [*sorted(str(p) for p in (det_data / "images").glob("*.png"))[:3], str(same_stem)]
    rows = run.predict(files, out=tmp_path / "predictions.csv")
    assert {row["path"] for row in rows} == set(files)
    assert all(row["label"] in ("", "red", "green") for row in rows)
    assert len(list((tmp_path / "predictions" / "drawn").glob("*.png"))) == 4  # two im00.png: im00 and im00_2
    listing = json.loads((tmp_path / "predictions" / "predictions.json").read_text())
    assert [Path(item["drawn"]).name for item in listing][-1] == "im00_2.png"
    with Image.open(tmp_path / "predictions" / "drawn" / "im00.png") as drawn:
        assert drawn.size == (96, 72)


def test_report_has_the_detection_sections(det_run: Path) -> None:
    page = (det_run / "report.html").read_text()
    for section in ("summary", "per-class-ap", "pr-curve", "examples", "curves", "diagnosis"):
        assert f'id="{section}"' in page, section
    assert "not available" not in page


TRUTH = [box_image("a.png", 100, 100, [[10, 10, 50, 50], [60, 60, 90, 90]], [0, 1]),
         box_image("b.png", 100, 100, [[20, 20, 70, 40]], [1]), box_image("c.png", 100, 100, [], [])]


def predictions_of(shift: float = 0.0, labels_plus: int = 0) -> list[dict[str, torch.Tensor]]:
    """The true boxes moved right by ``shift`` pixels as predictions (score 0.9), their labels plus ``labels_plus``."""
    return [{"boxes": torch.tensor(image.boxes, dtype=torch.float32).reshape(-1, 4) + torch.tensor([shift, 0, shift, 0]),
             "scores": torch.full((len(image.labels),), 0.9),
             "labels": torch.tensor(image.labels, dtype=torch.long) + labels_plus} for image in TRUTH]


def test_map_of_perfect_predictions_is_one() -> None:
    metrics = detection_metrics(predictions_of(), TRUTH, ["red", "green"])
    assert metrics["map"] == pytest.approx(1.0) and metrics["map_50"] == pytest.approx(1.0)
    assert [row["ap"] for row in metrics["per_class"]] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert metrics["num_images"] == 3 and metrics["num_boxes"] == 3


def test_shifted_boxes_lose_the_strict_thresholds_first() -> None:
    # each box moved 5 px right: IoU = overlap / (2 * area - overlap), worked out per box; a box counts as a hit
    # at the IoU thresholds 0.5, 0.55, ... up to its own IoU, so its class's AP is the share of those thresholds
    metrics = detection_metrics(predictions_of(shift=5.0), TRUTH, ["red", "green"])
    ious = [35 * 40 / (2 * 1600 - 35 * 40), 25 * 30 / (2 * 900 - 25 * 30), 45 * 20 / (2 * 1000 - 45 * 20)]
    assert all(0.5 < iou < 0.95 for iou in ious)
    assert metrics["map_50"] == pytest.approx(1.0)
    assert metrics["map_75"] is not None and metrics["map_75"] < 1.0
    expected_red = sum(ious[0] >= t - 1e-9 for t in np.arange(0.5, 0.96, 0.05)) / 10  # one box: AP 1 or 0 per IoU
    assert metrics["per_class"][0]["ap"] == pytest.approx(expected_red, abs=1e-6)
    far = detection_metrics(predictions_of(shift=30.0), TRUTH, ["red", "green"])
    assert far["map"] < metrics["map"] < 1.0


def test_a_wrong_class_is_no_hit() -> None:
    metrics = detection_metrics(predictions_of(labels_plus=1), TRUTH, ["red", "green", "blue"])
    assert metrics["map"] == pytest.approx(0.0)


def test_matching_counts_hits_false_positives_and_misses() -> None:
    true_boxes, true_labels = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), torch.tensor([0, 0])
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]])
    hits, found = match(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 0]), true_boxes, true_labels)
    assert hits.tolist() == [True, False, False] and found.tolist() == [True, False]  # a box is claimed once
    assert image_f1(hits, found) == pytest.approx(2 * 1 / 5)
    assert image_f1(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool)) == 1.0


def test_the_cli_fits_evaluates_and_predicts(det_data: Path, det_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "external.json"
    code, lines = run_cli(["evaluate", str(det_run), str(det_data), "--out", str(out)])
    import json

    assert code == 0 and lines == [], lines
    metrics = json.loads(out.read_text())
    assert metrics["split"] == "all" or metrics["num_images"] >= 2
    assert 0.0 <= metrics["map"] <= 1.0 and (tmp_path / "external_pr_curve.png").is_file()
    code, lines = run_cli(["predict", str(det_run), str(det_data / "images" / "im00.png"), "--out",
                           str(tmp_path / "boxes.csv")])
    assert code == 0 and (tmp_path / "boxes.csv").is_file() and (tmp_path / "boxes" / "predictions.json").is_file()


@pytest.mark.parametrize(("extra", "expected"), [
    (["--mixup", "0.2"], "--mixup does not apply to --task detection"),
    (["--monitor", "val_accuracy"], "--monitor does not apply to --task detection"),
    (["--detector", "yolo"], "detector"),
    (["--anchor-sizes", "16,32"], "--anchor-sizes gives 2 sizes but --detector fasterrcnn has 5 levels"),
    (["--anchor-sizes", "a,b"], "--anchor-sizes 'a,b' is not a list of positive pixel sizes"),
    (["--head", "logistic"], "--head logistic fits a classifier on pooled features"),
    (["--weights", "coco"], "--weights coco is for torchvision's whole COCO detectors"),
    (["--detector", "fcos_resnet50_fpn", "--backbone", "resnet50"], "--backbone does not apply to --detector fcos"),
    (["--detector", "retinanet_resnet50_fpn", "--anchor-sizes", "auto"], "--anchor-sizes does not apply"),
])
def test_refusals(extra: list[str], expected: str, det_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, lines = run_cli(["fit", str(det_data), "--task", "detection", "--backbone", "resnet18", "--weights", "none",
                           "--epochs", "1", "--out", str(out), "--no-report", *extra])
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not out.exists()


def test_detection_options_without_the_task_are_refused(det_data: Path, tmp_path: Path) -> None:
    code, lines = run_cli(["fit", str(det_data), "--detector", "fcos", "--out", str(tmp_path / "run")])
    assert code == 2 and "--detector applies to --task detection only" in lines[0], lines


def test_a_bad_label_is_one_line_and_leaves_no_run_folder(tmp_path: Path) -> None:
    data = write_detection_data(tmp_path / "data", count=4, background=0)
    (data / "labels" / "im01.txt").write_text("5 0.5 0.5 0.2 0.2\n")
    code, lines = run_cli(["fit", str(data), "--task", "detection", "--backbone", "resnet18", "--weights", "none",
                           "--out", str(tmp_path / "run"), "--no-report"])
    assert code == 2 and len(lines) == 1 and "im01.txt" in lines[0], lines
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("strategy", ["linear", "partial", "full"])
def test_strategies_train_the_heads_and_what_they_unfreeze(strategy: str, det_data: Path, tmp_path: Path) -> None:
    from cvtransfer.engine.runner import prepare
    from cvtransfer.engine.splits import load_splits

    config = det_config(det_data, tmp_path / "run", strategy=strategy, epochs=1)
    (tmp_path / "run").mkdir()
    prepared = prepare(config, load_splits(config, tmp_path / "run"))
    model = prepared.built.model
    trained = {id(p) for group in prepared.strategy.param_groups() for p in group["params"]}
    assert all(id(p) in trained for p in model.head.parameters() if p.requires_grad)
    assert any(p.requires_grad for p in model.head.parameters())
    backbone = [p.requires_grad for p in model.backbone.parameters()]
    assert {"linear": not any(backbone), "partial": any(backbone) and not all(backbone),
            "full": all(backbone)}[strategy]


def test_auto_anchor_sizes_follow_the_training_boxes(det_data: Path, tmp_path: Path) -> None:
    from cvtransfer.engine.runner import prepare
    from cvtransfer.engine.splits import load_splits

    config = det_config(det_data, tmp_path / "run", anchor_sizes="auto", epochs=1)
    (tmp_path / "run").mkdir()
    prepared = prepare(config, load_splits(config, tmp_path / "run"))
    sizes = prepared.built.model.architecture["anchor_sizes"]
    # rectangles of 16-30 px in 72x96 images scaled to a shorter side of 64: sides of about 14-27 px
    assert len(sizes) == 5 and sizes == sorted(sizes) and 8 <= sizes[0] <= 16 and sizes[2] <= 32


def test_killed_mid_epoch_and_resumed_matches_the_uninterrupted_run(det_data: Path, tmp_path: Path) -> None:
    from tests.engine.test_exact_resume import assert_same, run

    # 8 train images, batch 2: 4 steps per epoch; step 5 is inside epoch 2; random flips
    options = dict(data=str(det_data), task="detection", backbone="resnet18", weights="none", image_size=64,
                   batch_size=2, lr=1e-3, optimizer="adamw", val_split=0.2, test_split=0.2, epochs=2,
                   augment="light", progress=False, accelerator="cpu", num_workers=0, report=False, seed=0)
    run("fit", {**options, "out": str(tmp_path / "reference")})
    assert run("fit", {**options, "out": str(tmp_path / "run")}, kill_at=5) != 0
    assert not (tmp_path / "run" / "model.safetensors").exists()
    run("fit", {**options, "out": str(tmp_path / "run")}, resume=True)
    assert_same(tmp_path / "run", tmp_path / "reference")


def test_a_run_on_other_classes_reuses_all_but_the_class_layers(det_run: Path) -> None:
    from safetensors.torch import load_file

    from cvtransfer.models.factory import build_detection_model

    saved = load_file(det_run / "model.safetensors")
    other = build_detection_model("resnet18", str(det_run), ["cat", "dog"], "fasterrcnn", 64)
    same = build_detection_model("resnet18", str(det_run), ["red", "green"], "fasterrcnn", 64)
    assert other.load_report is not None and "but its class layers (roi_heads.box_predictor.cls_score, " \
        "roi_heads.box_predictor.bbox_pred)" in str(other.load_report.head)
    for built, reused in ((other, False), (same, True)):
        head = built.model.head.state_dict()
        assert torch.equal(head["backbone.fpn.layer_blocks.0.0.weight"], saved["head.backbone.fpn.layer_blocks.0.0.weight"])
        assert torch.equal(head["rpn.head.conv.0.0.weight"], saved["head.rpn.head.conv.0.0.weight"])
        assert torch.equal(head["roi_heads.box_head.fc6.weight"], saved["head.roi_heads.box_head.fc6.weight"])
        for layer in ("cls_score", "bbox_pred"):  # one output (set) per class: new for other classes
            assert torch.equal(head[f"roi_heads.box_predictor.{layer}.weight"],
                               saved[f"head.roi_heads.box_predictor.{layer}.weight"]) is reused


TORCHVISION_DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"


def test_a_torchvision_coco_detector_from_its_file_trains_and_predicts(det_data: Path, tmp_path: Path) -> None:
    import json

    import torchvision
    from safetensors import safe_open

    torch.manual_seed(0)
    reference = torchvision.models.get_model(TORCHVISION_DETECTOR, weights=None, weights_backbone=None)
    torch.save(reference.state_dict(), tmp_path / "coco.pth")  # stands in for torchvision's COCO file (offline)
    out = tmp_path / "run"
    code, lines = run_cli(["fit", str(det_data), "--task", "detection", "--detector", TORCHVISION_DETECTOR,
                           "--weights", str(tmp_path / "coco.pth"), "--strategy", "linear", "--image-size", "64",
                           "--epochs", "1", "--batch-size", "4", "--val-split", "0.2", "--test-split", "0.2",
                           "--out", str(out), "--no-report"])
    assert code == 0, lines
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["cvtransfer"])
        trunk = handle.get_tensor("backbone.1.block.0.0.weight")
    assert metadata["backbone"] == TORCHVISION_DETECTOR and metadata["architecture"]["detector"] == TORCHVISION_DETECTOR
    # --strategy linear: the COCO trunk is frozen, so the run keeps the file's tensor
    assert torch.equal(trunk, reference.backbone.body.get_submodule("1.block.0.0").weight)
    rows = cvtransfer.predict(out, [det_data / "images" / "im00.png"], out=tmp_path / "boxes.csv")
    assert all(row["label"] in ("", "red", "green") for row in rows)


def test_coco_weights_offline_are_one_line_and_leave_no_run_folder(
        det_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from cvtransfer.models import backbones

    def unreachable(*args: object, **kwargs: object) -> None:
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(backbones.socket, "create_connection", unreachable)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # nothing cached
    code, lines = run_cli(["fit", str(det_data), "--task", "detection", "--detector", "fcos_resnet50_fpn", "--weights",
                           "coco", "--out", str(tmp_path / "run"), "--no-report"])
    assert code == 2 and len(lines) == 1 and "COCO weights for fcos_resnet50_fpn" in lines[0], lines
    assert "https://" in lines[0] and not (tmp_path / "run").exists()


def test_max_image_pixels_holds_when_the_labels_are_read(tmp_path: Path) -> None:
    data = write_detection_data(tmp_path / "data", count=4, background=0)  # 72 x 96 = 6912 pixels each
    code, lines = run_cli(["fit", str(data), "--task", "detection", "--weights", "none", "--max-image-pixels", "5000",
                           "--out", str(tmp_path / "run"), "--no-report"])
    assert code == 2 and len(lines) == 1 and "im00.png" in lines[0] and "5000" in lines[0], lines
    assert not (tmp_path / "run").exists()
    code, lines = run_cli(["convert", str(data), str(tmp_path / "coco"), "--to", "coco", "--max-image-pixels", "5000"])
    assert code == 2 and len(lines) == 1 and "im00.png" in lines[0], lines
    assert not (tmp_path / "coco").exists()
    code, lines = run_cli(["convert", str(data), str(tmp_path / "coco"), "--to", "coco", "--max-image-pixels", "7000"])
    assert code == 0 and (tmp_path / "coco").is_dir(), lines
