"""Segmentation metrics against confusion matrices counted by hand, and the mask pictures pixel by pixel."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from cvtransfer.evaluation.segmentation import (
    MeanIoU,
    colourise,
    confusion_matrix,
    default_palette,
    error_overlay,
    image_grid,
    image_grid_figure,
    overlay,
    per_class_iou_figure,
    per_class_iou_plot,
    save_index_png,
    save_png,
    segmentation_metrics,
)

T = torch.tensor

# 2x3, ignore 255. (truth, pred) pairs: (0,0) (1,1) (255,1)=ignored (1,2) (1,1) (2,0)
# confusion (rows truth): [[1,0,0], [0,2,1], [1,0,0]], 5 pixels
# class 0: TP 1 FP 1 FN 0 -> IoU 1/2, Dice 2/3, recall 1
# class 1: TP 2 FP 0 FN 1 -> IoU 2/3, Dice 4/5, recall 2/3 (the 1 predicted on the ignored pixel is no FP)
# class 2: TP 0 FP 1 FN 1 -> IoU 0,   Dice 0,   recall 0
BASIC_PRED = T([[0, 1, 1], [2, 1, 0]])
BASIC_TRUTH = T([[0, 1, 255], [1, 1, 2]])
BASIC_CONFUSION = [[1, 0, 0], [0, 2, 1], [1, 0, 0]]

# 3x3, 4 classes, class d absent from truth and prediction (d is predicted only on the ignored pixel).
# pairs: (0,0) (0,1) (1,1) / (0,0) (1,1) (1,1) / (2,2) (2,0) (255,3)=ignored
# confusion: [[2,1,0,0], [0,3,0,0], [1,0,1,0], [0,0,0,0]], 8 pixels
# IoU a = 2/(2+1+1) = 1/2, b = 3/(3+1+0) = 3/4, c = 1/(1+0+1) = 1/2, d = None
# Dice a = 4/6, b = 6/7, c = 2/3 ; recall a = 2/3, b = 1, c = 1/2
ABSENT_PRED = T([[0, 1, 1], [0, 1, 1], [2, 0, 3]])
ABSENT_TRUTH = T([[0, 0, 1], [0, 1, 1], [2, 2, 255]])
ABSENT_CONFUSION = [[2, 1, 0, 0], [0, 3, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]


def test_confusion_matrix_counts_by_hand_and_drops_ignored_pixels() -> None:
    confusion = confusion_matrix(BASIC_PRED, BASIC_TRUTH, 3, 255)
    assert confusion.dtype == torch.int64
    assert confusion.tolist() == BASIC_CONFUSION
    assert int(confusion.sum()) == 5  # 6 pixels, one ignored
    # the task's own ignore value (-100), uint8 masks and a flat layout count the same pixels
    assert confusion_matrix(BASIC_PRED, BASIC_TRUTH.masked_fill(BASIC_TRUTH == 255, -100), 3, -100).tolist() \
        == BASIC_CONFUSION
    assert confusion_matrix(BASIC_PRED.to(torch.uint8), BASIC_TRUTH.to(torch.uint8), 3, 255).tolist() \
        == BASIC_CONFUSION
    assert confusion_matrix(BASIC_PRED.flatten(), BASIC_TRUTH.flatten(), 3, 255).tolist() == BASIC_CONFUSION


@pytest.mark.parametrize(("pred", "truth"), [
    (T([[0, 3]]), T([[0, 1]])),  # a predicted class past num_classes
    (T([[0, 1]]), T([[0, 7]])),  # a truth class past num_classes that is not the ignore index
    (T([[0, -1]]), T([[0, 1]])),
], ids=["pred", "truth", "negative"])
def test_confusion_matrix_refuses_out_of_range_classes(pred: torch.Tensor, truth: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(pred, truth, 3, 255)


def test_confusion_matrix_refuses_float_or_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(BASIC_PRED.float(), BASIC_TRUTH, 3, 255)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(BASIC_PRED, BASIC_TRUTH.flatten(), 3, 255)


def test_metrics_match_hand_computation() -> None:
    m = segmentation_metrics(T(BASIC_CONFUSION), ["a", "b", "c"])
    assert m["num_pixels"] == 5
    assert m["confusion"] == BASIC_CONFUSION
    assert m["miou"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)  # 7/18
    assert m["dice"] == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)  # 22/45
    assert m["pixel_accuracy"] == pytest.approx(3 / 5)
    assert m["mean_class_accuracy"] == pytest.approx((1 + 2 / 3 + 0) / 3)  # 5/9
    assert all(type(m[k]) is float for k in ("miou", "dice", "pixel_accuracy", "mean_class_accuracy"))
    b = m["per_class"][1]
    assert b["class"] == "b"
    assert b["iou"] == pytest.approx(2 / 3) and b["dice"] == pytest.approx(4 / 5)
    assert b["accuracy"] == pytest.approx(2 / 3)
    assert (b["pixels"], b["predicted"]) == (3, 2)
    assert m["per_class"][2]["iou"] == 0.0 and m["per_class"][2]["dice"] == 0.0


def test_class_absent_from_truth_and_prediction_is_left_out_of_the_means() -> None:
    confusion = confusion_matrix(ABSENT_PRED, ABSENT_TRUTH, 4, 255)
    assert confusion.tolist() == ABSENT_CONFUSION
    m = segmentation_metrics(confusion, ["a", "b", "c", "d"])
    d = m["per_class"][3]
    assert d["iou"] is None and d["dice"] is None and d["accuracy"] is None
    assert (d["pixels"], d["predicted"]) == (0, 0)
    # the mean of a, b, c only: 7/12; counting d as 0 would give 7/16, as 1 would give 11/16
    assert m["miou"] == pytest.approx((1 / 2 + 3 / 4 + 1 / 2) / 3)
    assert m["dice"] == pytest.approx((4 / 6 + 6 / 7 + 2 / 3) / 3)  # 46/63
    assert m["pixel_accuracy"] == pytest.approx(6 / 8)
    assert m["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)  # 13/18


def test_class_predicted_but_absent_from_truth_counts_as_zero_iou() -> None:
    # truth  0 0 0 / 1 1 1 ; pred  0 0 2 / 1 1 2 -> confusion [[2,0,1], [0,2,1], [0,0,0]]
    # IoU a = 2/3, b = 2/3, c = 0/(0+2+0) = 0 and counted -> mIoU 4/9 (not 2/3)
    # recall: a 2/3, b 2/3, c has no truth pixel -> mean class accuracy 2/3 (not 4/9)
    confusion = confusion_matrix(T([[0, 0, 2], [1, 1, 2]]), T([[0, 0, 0], [1, 1, 1]]), 3, 255)
    assert confusion.tolist() == [[2, 0, 1], [0, 2, 1], [0, 0, 0]]
    m = segmentation_metrics(confusion, ["a", "b", "c"])
    c = m["per_class"][2]
    assert c["iou"] == 0.0 and c["accuracy"] is None and (c["pixels"], c["predicted"]) == (0, 2)
    assert m["miou"] == pytest.approx(4 / 9)
    assert m["dice"] == pytest.approx((4 / 5 + 4 / 5 + 0) / 3)
    assert m["mean_class_accuracy"] == pytest.approx(2 / 3)


def test_no_pixels_gives_none_not_a_crash() -> None:
    everything_ignored = confusion_matrix(BASIC_PRED, torch.full_like(BASIC_TRUTH, 255), 3, 255)
    m = segmentation_metrics(everything_ignored, ["a", "b", "c"])
    assert m["num_pixels"] == 0
    assert m["miou"] is m["dice"] is m["pixel_accuracy"] is m["mean_class_accuracy"] is None
    assert [row["iou"] for row in m["per_class"]] == [None, None, None]
    with pytest.raises(ValueError, match="2x2"):
        segmentation_metrics(everything_ignored, ["a", "b"])


def test_mean_iou_is_one_matrix_over_all_updates_not_a_mean_of_batches() -> None:
    # batch 1: truth 0 0 / 0 1, pred all 0 -> [[3,0],[1,0]]: IoU 3/4 and 0, mIoU 3/8
    # batch 2: truth all 1, pred all 1     -> [[0,0],[0,4]]: class 0 absent, mIoU 1
    # mean of the batches (3/8 + 1)/2 = 11/16; one matrix [[3,0],[1,4]]: (3/4 + 4/5)/2 = 31/40
    truths = [T([[[0, 0], [0, 1]]]), T([[[1, 1], [1, 1]]])]
    preds = [T([[[0, 0], [0, 0]]]), T([[[1, 1], [1, 1]]])]
    metric = MeanIoU(2)
    for pred, truth in zip(preds, truths):
        metric.update(pred, truth)
    assert metric.confusion.tolist() == [[3, 0], [1, 4]]
    value = float(metric.compute())
    assert value == pytest.approx(31 / 40)
    assert value != pytest.approx(11 / 16)
    whole = segmentation_metrics(confusion_matrix(torch.cat(preds), torch.cat(truths), 2, 255), ["a", "b"])
    assert value == pytest.approx(whole["miou"])


def test_mean_iou_leaves_out_absent_classes_and_ignored_pixels_like_the_metrics() -> None:
    metric = MeanIoU(4, ignore_index=255)
    metric.update(ABSENT_PRED[None], ABSENT_TRUTH[None])
    assert float(metric.compute()) == pytest.approx(7 / 12)
    predicted_only = MeanIoU(3)  # class c predicted, never true: IoU 0 and counted, 4/9 (see above)
    predicted_only.update(T([[[0, 0, 2], [1, 1, 2]]]), T([[[0, 0, 0], [1, 1, 1]]]))
    assert float(predicted_only.compute()) == pytest.approx(4 / 9)
    nothing_counted = MeanIoU(4)
    nothing_counted.update(ABSENT_PRED[None], torch.full_like(ABSENT_TRUTH, 255)[None])
    assert float(nothing_counted.compute()) == 0.0


def test_mean_iou_takes_logits_and_resizes_them_to_the_targets() -> None:
    # logits 1x2 (class 0 left, class 1 right) resized bilinearly to 2x4: pred 0 0 1 1 / 0 0 1 1
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0] = T([[1.0, -1.0]])
    logits[0, 1] = T([[-1.0, 1.0]])
    truth = T([[[0, 0, 0, 1], [0, 1, 1, -100]]])
    # pairs: (0,0) (0,0) (0,1) (1,1) / (0,0) (1,0) (1,1) ignored -> [[3,1],[1,2]]: IoU 3/5 and 2/4
    metric = MeanIoU(2, ignore_index=-100)
    metric.update(logits, truth)
    assert metric.confusion.tolist() == [[3, 1], [1, 2]]
    assert float(metric.compute()) == pytest.approx((3 / 5 + 2 / 4) / 2)
    same_size = MeanIoU(2, ignore_index=-100)
    same_size.update(torch.nn.functional.one_hot(T([[[0, 0, 1, 1], [0, 0, 1, 1]]]), 2).permute(0, 3, 1, 2).float(),
                     truth)
    assert same_size.confusion.tolist() == [[3, 1], [1, 2]]


def test_default_palette_is_the_voc_colour_map() -> None:
    assert default_palette(6) == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128)]
    assert default_palette(21)[20] == (0, 64, 128)  # VOC's tvmonitor
    assert len(set(default_palette(256))) == 256
    assert default_palette(0) == []


PALETTE = [(10, 20, 30), (200, 100, 0)]
MASK = np.array([[0, 1], [255, 5]])  # class 0, class 1, ignored, past the palette


def test_colourise_gives_each_class_its_colour_and_the_rest_black() -> None:
    expected = np.array([[[10, 20, 30], [200, 100, 0]], [[0, 0, 0], [0, 0, 0]]], dtype=np.uint8)
    out = colourise(MASK, PALETTE)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(colourise(np.where(MASK == 255, -100, MASK), PALETTE, ignore_index=-100), expected)


def test_overlay_blends_colours_and_keeps_the_image_where_ignored() -> None:
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    # 0.5*100 + 0.5*(10,20,30) = (55,60,65); 0.5*100 + 0.5*(200,100,0) = (150,100,50)
    np.testing.assert_array_equal(overlay(image, MASK, PALETTE), np.array(
        [[[55, 60, 65], [150, 100, 50]], [[100, 100, 100], [100, 100, 100]]], dtype=np.uint8))
    # alpha 0.25: 0.75*100 + 0.25*(200,100,0) = (125,100,75)
    np.testing.assert_array_equal(overlay(image, MASK, PALETTE, alpha=0.25)[0, 1], [125, 100, 75])
    np.testing.assert_array_equal(image, 100)  # the input is left alone
    with pytest.raises(ValueError):
        overlay(image[:1], MASK, PALETTE)


def test_error_overlay_marks_wrong_pixels_red_and_dims_correct_ones() -> None:
    image = np.array([[[10, 20, 30], [40, 50, 60]], [[70, 80, 90], [100, 110, 120]]], dtype=np.uint8)
    pred = np.array([[0, 1], [1, 1]])
    truth = np.array([[0, 0], [255, 1]])  # correct, wrong, ignored (and "wrong"), correct
    out = error_overlay(image, pred, truth)
    expected = np.array([[[5, 10, 15], [255, 0, 0]], [[70, 80, 90], [50, 55, 60]]], dtype=np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint8
    assert image[0, 0].tolist() == [10, 20, 30]


def test_index_png_reads_back_as_class_indices_and_shows_the_palette(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 2, 2], [2, 1, 0, 0], [1, 1, 1, 2]], dtype=np.int64)
    palette = default_palette(3)
    path = tmp_path / "masks" / "a.png"
    save_index_png(path, mask, palette)
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]  # no temporary file left
    with Image.open(path) as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.asarray(image), mask)
        assert image.getpalette()[:9] == [v for colour in palette for v in colour]
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), colourise(mask, palette))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        save_index_png(tmp_path / "b.png", np.array([[0, 300]]), palette)


def test_save_png_round_trip(tmp_path: Path) -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 7
    save_png(tmp_path / "rgb.png", rgb)
    with Image.open(tmp_path / "rgb.png") as image:
        assert image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), rgb)


def _is_png(path: Path) -> bool:
    with Image.open(path) as image:
        return image.format == "PNG" and image.width > 50 and image.height > 50


def test_per_class_iou_plot_marks_absent_classes(tmp_path: Path) -> None:
    metrics = segmentation_metrics(T(ABSENT_CONFUSION), ["a", "b", "c", "d"])
    fig = per_class_iou_figure(metrics)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c", "d"]
    assert ax.yaxis_inverted()  # the first class on top
    assert [t.get_text() for t in ax.texts] == ["0.500", "0.750", "0.500", "absent"]
    assert [p.get_width() for p in ax.patches] == pytest.approx([0.5, 0.75, 0.5, 0.0])
    plt.close(fig)
    per_class_iou_plot(metrics, tmp_path / "per_class_iou.png")
    assert _is_png(tmp_path / "per_class_iou.png")
    assert [p.name for p in tmp_path.iterdir()] == ["per_class_iou.png"]


def test_image_grid_has_a_row_per_image(tmp_path: Path) -> None:
    image = np.full((8, 12, 3), 90, dtype=np.uint8)
    mask = np.array([[0, 1] * 6] * 8)
    row = [image, colourise(mask, PALETTE), colourise(1 - mask, PALETTE), error_overlay(image, mask, 1 - mask)]
    titles = ["image", "truth", "prediction", "errors (red)"]
    fig = image_grid_figure([row, row], titles, row_labels=["best: a.png", "worst: b.png"])
    assert len(fig.axes) == 8 and all(len(ax.images) == 1 for ax in fig.axes)
    assert [ax.get_title() for ax in fig.axes[:4]] == titles
    assert fig.axes[4].get_ylabel() == "worst: b.png"
    plt.close(fig)
    image_grid([row, row], titles, tmp_path / "examples.png", row_labels=["best", "worst"])
    assert _is_png(tmp_path / "examples.png")
    with pytest.raises(ValueError):
        image_grid([], titles, tmp_path / "none.png")
