"""--task segmentation end to end on tiny generated image/mask folders: training with each decoder and
strategy, the run folder, evaluation at the masks' own size, predict's masks, resume, report, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cvtransfer
from cvtransfer.models.backbones import create_backbone
from cvtransfer.models.segmentation import DECODERS, SegmentationModel
from tests.conftest import tiny_config
from tests.test_bad_inputs import run_cli

COLOURS = [(20, 20, 20), (220, 40, 40), (40, 200, 40)]


def write_segmentation_data(root: Path, count: int = 10, size: tuple[int, int] = (44, 60), seed: int = 0) -> Path:
    """images/ + masks/: a dark background (class 0) with a red (1) and a green (2) rectangle, 255 at the edge."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    height, width = size
    for i in range(count):
        mask = np.zeros(size, np.uint8)
        for label in (1, 2):
            top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
            mask[top:top + height // 3, left:left + width // 3] = label
        mask[0, :] = 255
        pixels = np.array(COLOURS, np.uint8)[np.minimum(mask, 2)] + rng.integers(0, 30, (*size, 3)).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"im{i}.jpg", quality=95)
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")
    (root / "classes.txt").write_text("background\nred\ngreen\n")
    return root


BASE = dict(task="segmentation", backbone="resnet18", weights="none", image_size=32, batch_size=2, lr=1e-3,
            val_split=0.2, test_split=0.2, progress=False, accelerator="cpu", num_workers=0, report=False, seed=0)


def seg_config(data: Path, out: Path, **options: object) -> cvtransfer.Config:
    values: dict[str, object] = dict(task="segmentation", backbone="resnet18", image_size=32, batch_size=4,
                                     epochs=2, lr=1e-3, val_split=0.2, test_split=0.2)
    values.update(options)
    return tiny_config(data, out, **values)


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_segmentation_data(tmp_path_factory.mktemp("seg") / "data")


@pytest.fixture(scope="module")
def seg_run(seg_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("segrun") / "run"
    return cvtransfer.fit(seg_config(seg_data, out, epochs=3, lr=3e-3, report=True)).path


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_b0", "convnext_atto", "swin_tiny_patch4_window7_224",
                                      "vit_tiny_patch16_224"])
@pytest.mark.parametrize("decoder", DECODERS)
def test_every_decoder_trains_a_step_and_predicts_the_input_size(backbone: str, decoder: str) -> None:
    transformer = "vit" in backbone or "swin" in backbone
    built = create_backbone(backbone, image_size=64 if transformer else None)
    if "vit" in backbone and decoder != "fcn":
        with pytest.raises(cvtransfer.ConfigError, match="--decoder fcn"):
            SegmentationModel(built, decoder, 3)
        return
    model = SegmentationModel(built, decoder, 3)
    x = torch.randn(2, 3, 64, 64 if transformer else 96)
    y = torch.randint(0, 3, (2, *x.shape[-2:]))
    before = [p.detach().clone() for p in model.head.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert model(x).shape == (2, 3, *x.shape[-2:])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.head.parameters()))


def test_a_run_folder_with_mask_metrics_at_the_masks_size(seg_run: Path) -> None:
    for name in ("model.safetensors", "metrics.json", "per_class_iou.png", "confusion.png", "examples.png",
                 "curves.png", "history.csv", "report.html", "splits.json", "classes.json"):
        assert (seg_run / name).is_file(), name
    metrics = cvtransfer.Run(seg_run).metrics
    assert metrics["split"] == "test" and metrics["num_images"] == 2
    assert [row["class"] for row in metrics["per_class"]] == ["background", "red", "green"]
    # every labelled pixel of the original 44 x 60 masks is counted once (the first row is 255: ignored)
    assert metrics["num_pixels"] == 2 * 43 * 60
    assert sum(map(sum, metrics["confusion"])) == 2 * 43 * 60
    history = cvtransfer.Run(seg_run).history
    assert "val_miou" in history[0] and len(history) == 3
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert metrics["pixel_accuracy"] > 0.55  # the background alone is ~0.6 of the pixels: the model learns beyond


def test_predict_writes_index_masks_and_overlays_of_the_input_size(seg_run: Path, seg_data: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "predictions.csv"
    rows = cvtransfer.predict(seg_run, [seg_data / "images" / "im0.jpg"], out=out)
    mask = Image.open(tmp_path / "predictions" / "masks" / "im0.png")
    assert mask.mode == "P" and mask.size == (60, 44)
    assert set(np.unique(np.asarray(mask))) <= {0, 1, 2}
    assert Image.open(tmp_path / "predictions" / "overlays" / "im0.png").size == (60, 44)
    assert out.is_file() and abs(sum(v for k, v in rows[0].items() if k.startswith("share_")) - 1) < 1e-6


def test_evaluate_on_other_data_and_the_cli(seg_run: Path, tmp_path: Path) -> None:
    other = write_segmentation_data(tmp_path / "other", count=3, size=(40, 50), seed=5)
    out = tmp_path / "external.json"
    code, lines = run_cli(["evaluate", str(seg_run), str(other), "--out", str(out)])
    assert code == 0, lines
    metrics = cvtransfer.Run(seg_run).evaluate(other, out)
    assert metrics["num_images"] == 3 and metrics["num_pixels"] == 3 * 39 * 50


def test_report_has_the_segmentation_sections(seg_run: Path) -> None:
    page = (seg_run / "report.html").read_text()
    for section in ("per-class-iou", "confusion", "examples", "curves", "diagnosis"):
        assert f'id="{section}"' in page, section
    assert "not available" not in page


@pytest.mark.parametrize("strategy", ["linear", "partial", "gradual", "l2sp"])
def test_strategies_train_the_decoder_and_what_they_unfreeze(strategy: str, seg_data: Path, tmp_path: Path) -> None:
    from cvtransfer.engine.runner import prepare
    from cvtransfer.engine.splits import load_splits

    config = seg_config(seg_data, tmp_path / "run", strategy=strategy, epochs=1)
    (tmp_path / "run").mkdir()
    prepared = prepare(config, load_splits(config, tmp_path / "run"))
    groups = prepared.strategy.param_groups()
    names = {g.get("name", "") for g in groups}
    assert any(name.startswith("head") for name in names)
    frozen_encoder = all(not p.requires_grad for p in prepared.built.model.backbone.parameters())
    assert frozen_encoder == (strategy == "linear")


def test_l2sp_penalises_the_decoder_weights(seg_data: Path, tmp_path: Path) -> None:
    from cvtransfer.engine.runner import prepare
    from cvtransfer.engine.splits import load_splits
    from cvtransfer.losses.base import LossBatch

    config = seg_config(seg_data, tmp_path / "run", strategy="l2sp", epochs=1)
    (tmp_path / "run").mkdir()
    prepared = prepare(config, load_splits(config, tmp_path / "run"))
    empty = torch.empty(0)
    loss, _ = prepared.loss_terms(LossBatch(empty, empty, empty, 0.0))
    decoder = sum(w.pow(2).sum() for w in prepared.built.model.head.parameters() if w.ndim > 1)
    assert torch.isfinite(loss) and float(loss.detach()) == pytest.approx(config.l2sp_beta / 2 * float(decoder.detach()), rel=1e-5)


def test_killed_mid_epoch_and_resumed_matches_the_uninterrupted_run(seg_data: Path, tmp_path: Path) -> None:
    from tests.engine.test_exact_resume import assert_same, run

    # 6 train images, batch 2: 3 steps per epoch; step 4 is inside epoch 2; random crops, scales and flips
    options = {**BASE, "data": str(seg_data), "epochs": 2, "augment": "light"}
    run("fit", {**options, "out": str(tmp_path / "reference")})
    assert run("fit", {**options, "out": str(tmp_path / "run")}, kill_at=4) != 0
    assert not (tmp_path / "run" / "model.safetensors").exists()
    run("fit", {**options, "out": str(tmp_path / "run")}, resume=True)
    assert_same(tmp_path / "run", tmp_path / "reference")


@pytest.mark.parametrize(("extra", "expected"), [
    (["--mixup", "0.2"], "--mixup does not apply to --task segmentation"),
    (["--class-weights", "auto"], "--class-weights does not apply to --task segmentation"),
    (["--decoder", "nope"], "decoder"),
    (["--backbone", "tv/vit_b_16"], "--backbone tv/vit_b_16 cannot give feature maps"),
])
def test_refusals(extra: list[str], expected: str, seg_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, lines = run_cli(["fit", str(seg_data), "--task", "segmentation", "--backbone", "resnet18", "--weights",
                           "none", "--epochs", "1", "--out", str(out), "--no-report", *extra])
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not out.exists()


def test_a_torchvision_encoder_starts_from_a_classification_run_and_trains(seg_data: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from cvtransfer.models.factory import build_segmentation_model
    from tests.conftest import write_split_folders

    classifier = cvtransfer.fit(tiny_config(write_split_folders(tmp_path / "cls", 6, 3, 3), tmp_path / "cls_run",
                                            backbone="tv/resnet18", image_size=32, epochs=1)).path
    built = build_segmentation_model("tv/resnet18", str(classifier), ["background", "red", "green"], "unet")
    saved = load_file(classifier / "model.safetensors")
    encoder = dict(built.model.backbone.named_parameters())
    assert built.load_report is not None and built.load_report.loaded >= len(encoder)
    assert all(torch.equal(tensor, saved[f"backbone.{name}"]) for name, tensor in encoder.items())
    out = tmp_path / "seg_run"
    code, lines = run_cli(["fit", str(seg_data), "--task", "segmentation", "--backbone", "tv/resnet18", "--weights",
                           str(classifier), "--decoder", "fpn", "--image-size", "32", "--epochs", "1", "--batch-size",
                           "2", "--val-split", "0.2", "--test-split", "0.2", "--out", str(out), "--no-report"])
    assert code == 0, lines
    assert 0.0 <= cvtransfer.Run(out).metrics["miou"] <= 1.0
    cvtransfer.predict(out, [seg_data / "images" / "im0.jpg"], out=tmp_path / "predictions.csv")  # rebuilt from the run
    assert Image.open(tmp_path / "predictions" / "masks" / "im0.png").size == (60, 44)


def test_a_segmentation_folder_without_the_task_is_told_so(seg_data: Path, tmp_path: Path) -> None:
    code, lines = run_cli(["fit", str(seg_data), "--backbone", "tinycnn", "--weights", "none", "--out",
                           str(tmp_path / "run")])
    assert code == 2 and "--task segmentation" in lines[0], lines


def test_decoder_without_the_task_is_refused(seg_data: Path, tmp_path: Path) -> None:
    code, lines = run_cli(["fit", str(seg_data), "--decoder", "fpn", "--out", str(tmp_path / "run")])
    assert code == 2 and "--decoder applies to --task segmentation only" in lines[0], lines
