"""Segmentation data: layouts, classes files, mask kinds, the checks, joint transforms and padded batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cvtransfer.data.masks import (
    SegmentationDataset,
    SegmentationSplits,
    crop_to,
    discover_segmentation,
    pad_collate,
    pad_to_stride,
    read_mask,
)
from cvtransfer.data.transforms import Preprocessing
from cvtransfer.errors import DataError

PRE = Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
LEVELS = np.array([30, 100, 170, 240])  # the image's grey level of each class in the alignment tests
ROAD, CAR, SKY = (128, 64, 128), (64, 0, 128), (255, 255, 255)


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return path


def stripes(width: int = 12, height: int = 8, classes: int = 3) -> np.ndarray:
    """A mask of vertical bands 0..classes-1, with a 255 (unlabelled) pixel in a corner."""
    mask = (np.arange(width)[None, :] * classes // width).repeat(height, 0).astype(np.uint8)
    mask[0, 0] = 255
    return mask


def write_pairs(folder: Path, count: int, classes: int = 3, size: tuple[int, int] = (12, 8)) -> Path:
    """folder/images/img_NN.jpg and folder/masks/img_NN.png."""
    for i in range(count):
        save(folder / "images" / f"img_{i:02d}.jpg", np.full((size[1], size[0], 3), 9 * i % 256, np.uint8))
        save(folder / "masks" / f"img_{i:02d}.png", stripes(*size, classes))
    return folder


def quadrants(width: int = 60, height: int = 36) -> tuple[np.ndarray, np.ndarray]:
    """An image whose grey level is LEVELS[class] of the mask at the same pixel, regions off-centre."""
    ys, xs = np.mgrid[:height, :width]
    mask = (2 * (xs >= 22) + (ys >= 14)).astype(np.uint8)
    return np.repeat(LEVELS[mask].astype(np.uint8)[..., None], 3, axis=2), mask


def stems(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(Path(image).stem, Path(mask).stem) for image, mask in pairs]


def one_line_error(call: object, *parts: str) -> str:
    with pytest.raises(DataError) as info:
        call()  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


# layouts


def test_images_and_masks_folders_are_paired_by_stem_and_split_seeded(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "d", 10)
    splits = discover_segmentation(root, val_split=0.2, seed=1)
    assert splits.classes == ["class_0", "class_1", "class_2"]  # 255 is the ignore index, not a class
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 2, 0)
    assert all(image == mask for image, mask in stems(splits.train + splits.val))
    assert all(Path(image).parent.name == "images" and Path(mask).parent.name == "masks"
               for image, mask in splits.train)
    assert not set(splits.train) & set(splits.val)
    assert discover_segmentation(root, val_split=0.2, seed=1).val == splits.val
    assert discover_segmentation(root, val_split=0.2, seed=2).val != splits.val
    assert splits.counts("val") == {"images": 2}


def test_val_and_test_fractions_are_of_the_whole_data(tmp_path: Path) -> None:
    splits = discover_segmentation(write_pairs(tmp_path / "d", 10), val_split=0.2, test_split=0.3)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (5, 2, 3)
    assert len(set(splits.train) | set(splits.val) | set(splits.test)) == 10


def test_a_val_split_keeps_one_image_of_two(tmp_path: Path) -> None:
    splits = discover_segmentation(write_pairs(tmp_path / "d", 2), val_split=0.05)
    assert (len(splits.train), len(splits.val)) == (1, 1)
    assert discover_segmentation(tmp_path / "d", val_split=0.0).val == []


def test_split_folders_keep_their_splits(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_pairs(root / "train", 6)
    write_pairs(root / "valid", 2)
    write_pairs(root / "test", 3)
    splits = discover_segmentation(root)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 3)
    assert all(Path(image).parts[-3] == "valid" for image, _ in splits.val)
    assert all(image == mask for image, mask in stems(splits.test))


def test_split_folders_without_val_carve_it_from_train(tmp_path: Path) -> None:
    root = tmp_path / "d"
    write_pairs(root / "train", 10)
    splits = discover_segmentation(root, val_split=0.3)
    assert (len(splits.train), len(splits.val)) == (7, 3)
    assert all(Path(image).parts[-3] == "train" for image, _ in splits.val)


def test_csv_layout_with_split_column_and_classes_next_to_it(tmp_path: Path) -> None:
    write_pairs(tmp_path / "d", 5)
    rows = ["Image,Mask,Split"] + [f"d/images/img_{i:02d}.jpg,d/masks/img_{i:02d}.png,{'validation' if i < 2 else ''}"
                                   for i in range(4)]
    rows.append(f"{tmp_path}/d/images/img_04.jpg,{tmp_path}/d/masks/img_04.png,test")
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(rows) + "\n")
    (tmp_path / "classes.txt").write_text("# names\nsky\n\nroad\ncar\n")
    splits = discover_segmentation(listing, val_split=0.5)
    assert splits.classes == ["sky", "road", "car"]
    assert stems(splits.val) == [("img_00", "img_00"), ("img_01", "img_01")]
    assert stems(splits.train) == [("img_02", "img_02"), ("img_03", "img_03")]
    assert stems(splits.test) == [("img_04", "img_04")]
    assert Path(splits.train[0][0]).is_file() and Path(splits.train[0][1]).is_file()


# classes and kinds of masks


def test_classes_file_names_and_the_option_overriding_it(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "d", 3)
    (root / "classes.txt").write_text("sky\nroad\ntraffic light\n")
    assert discover_segmentation(root).classes == ["sky", "road", "traffic light"]
    other = tmp_path / "mine.txt"
    other.write_text("a\nb\nc\nd\n")
    splits = discover_segmentation(root, classes_file=other)
    assert splits.classes == ["a", "b", "c", "d"] and splits.palette is None


def test_classes_file_colours_become_the_palette_for_index_masks(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "d", 3)
    (root / "classes.txt").write_text("sky 128 128 128\nroad 128 64 128\ntraffic light 250 170 30\n")
    splits = discover_segmentation(root)
    assert splits.classes == ["sky", "road", "traffic light"]
    assert splits.palette == [(128, 128, 128), (128, 64, 128), (250, 170, 30)]
    assert read_mask(splits.train[0][1], splits.palette).tolist() == stripes().astype(np.int64).tolist()


def test_palette_mode_masks_hold_class_indices(tmp_path: Path) -> None:
    mask = np.zeros((8, 10), np.uint8)
    mask[2:6, 3:8] = 1
    mask[2, 3:8] = 255  # a VOC-style border
    image = Image.fromarray(mask, "P")
    image.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 253 + [224, 224, 192])
    (tmp_path / "d" / "masks").mkdir(parents=True)
    image.save(tmp_path / "d" / "masks" / "a.png")
    save(tmp_path / "d" / "images" / "a.jpg", np.zeros((8, 10, 3), np.uint8))
    splits = discover_segmentation(tmp_path / "d", val_split=0.0)
    assert splits.classes == ["class_0", "class_1"]
    assert splits.palette == [(0, 0, 0), (128, 0, 0)]  # the masks' own colours
    assert read_mask(tmp_path / "d" / "masks" / "a.png").tolist() == mask.astype(np.int64).tolist()


def test_colour_masks_are_mapped_through_the_palette_and_the_ignore_colour(tmp_path: Path) -> None:
    root = tmp_path / "d"
    colours = np.zeros((6, 9, 3), np.uint8)
    colours[:, 3:] = ROAD
    colours[4:, 6:] = CAR
    colours[0, :] = SKY  # unlabelled
    save(root / "masks" / "a.png", colours)
    save(root / "masks" / "b.png", np.dstack([colours, np.full((6, 9), 255, np.uint8)]))  # RGBA
    for stem in "ab":
        save(root / "images" / f"{stem}.png", np.zeros((6, 9, 3), np.uint8))
    (root / "classes.txt").write_text("background 0 0 0\nroad 128 64 128\nVoid 255 255 255\ncar 64 0 128\n")
    splits = discover_segmentation(root, val_split=0.0, ignore_index=11)
    assert splits.classes == ["background", "road", "car"]
    assert splits.palette == [(0, 0, 0), ROAD, CAR] and splits.ignore_colours == [SKY]
    expected = np.zeros((6, 9), np.int64)
    expected[:, 3:] = 1
    expected[4:, 6:] = 2
    expected[0, :] = 11
    for _, mask in splits.train:
        assert read_mask(mask, splits.palette, 11, splits.ignore_colours).tolist() == expected.tolist()
    dataset = SegmentationDataset(splits.train, PRE, 6, "none", False, splits.palette, 11,
                                  ignore_colours=splits.ignore_colours)
    assert dataset[0][1].tolist() == expected.tolist()  # the eval size is the mask's own here


def test_an_unknown_colour_names_the_mask_the_colour_and_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "d"
    colours = np.zeros((6, 9, 3), np.uint8)
    colours[2, 5] = (0, 255, 0)
    save(root / "masks" / "a.png", colours)
    save(root / "images" / "a.png", colours)
    (root / "classes.txt").write_text("background 0 0 0\nroad 128 64 128\n")
    one_line_error(lambda: discover_segmentation(root), "a.png", "(0, 255, 0)", "x=5, y=2", "ignore 0 255 0")
    (root / "classes.txt").unlink()
    one_line_error(lambda: discover_segmentation(root), "a.png", "RGB colour mask", "classes.txt")


def test_grey_rgb_and_16_bit_masks_hold_indices(tmp_path: Path) -> None:
    grey = save(tmp_path / "grey.png", np.repeat(stripes()[..., None], 3, axis=2))
    wide = save(tmp_path / "wide.png", stripes().astype(np.uint16) * 200)
    assert Image.open(wide).mode.startswith("I")
    assert read_mask(grey).tolist() == stripes().astype(np.int64).tolist()
    assert read_mask(wide).tolist() == (stripes().astype(np.int64) * 200).tolist()


# bad inputs: one line, naming the file


def test_an_image_without_a_mask_names_it_and_the_masks_folder(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "d", 3)
    (root / "masks" / "img_01.png").rename(root / "masks" / "img_01_mask.png")
    one_line_error(lambda: discover_segmentation(root), "img_01.jpg", str(root / "masks"), "img_01_mask.png")


def test_a_mask_without_an_image_is_skipped_with_a_reason(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "d", 3)
    save(root / "masks" / "extra.png", stripes())
    (root / "images" / "notes.txt").write_text("not an image")
    splits = discover_segmentation(root, val_split=0.0)
    assert len(splits.train) == 3
    reasons = {Path(path).name: reason for path, reason in splits.skipped}
    assert "without an image" in reasons["extra.png"] and "extension" in reasons["notes.txt"]


def test_a_mask_of_another_size_gives_both_sizes(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "d", 3)
    save(root / "masks" / "img_02.png", stripes(10, 8))
    one_line_error(lambda: discover_segmentation(root), "img_02.png", "10x8", "12x8")


def test_exif_rotated_images_are_compared_as_they_load(tmp_path: Path) -> None:
    root = tmp_path / "d"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: 12x8 stored, 8x12 shown
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(root / "images" / "a.jpg", exif=exif)
    save(root / "masks" / "a.png", stripes(12, 8))
    one_line_error(lambda: discover_segmentation(root, val_split=0.0), "a.png", "12x8", "8x12")
    save(root / "masks" / "a.png", stripes(8, 12))
    assert len(discover_segmentation(root, val_split=0.0).train) == 1


def test_a_value_that_is_no_class_names_the_mask_and_ignore_index(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "d", 3)
    (root / "classes.txt").write_text("sky\nroad\n")
    one_line_error(lambda: discover_segmentation(root), "img_00.png", "value 2", "2 classes", "--ignore-index is 255")


def test_masks_of_one_class_are_refused_with_a_hint(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "d", 2)
    for mask in (root / "masks").iterdir():
        save(mask, np.where(stripes() > 0, 255, 0).astype(np.uint8))
    one_line_error(lambda: discover_segmentation(root), "single class", "--ignore-index")


@pytest.mark.parametrize("broken", ["images/img_01.jpg", "masks/img_01.png"])
def test_unreadable_files_are_named(tmp_path: Path, broken: str) -> None:
    root = write_pairs(tmp_path / "d", 3)
    (root / broken).write_bytes(b"not an image at all")
    one_line_error(lambda: discover_segmentation(root), broken.split("/")[1], "replace or remove")


def test_no_images_and_missing_folders_are_refused(tmp_path: Path) -> None:
    one_line_error(lambda: discover_segmentation(tmp_path / "nothing"), "nothing", "does not exist")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    one_line_error(lambda: discover_segmentation(tmp_path / "empty"), "no masks/ folder")
    (tmp_path / "empty" / "masks").mkdir()
    one_line_error(lambda: discover_segmentation(tmp_path / "empty"), "empty", "no image with a mask")


def test_two_images_of_one_stem_are_refused(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "d", 2)
    save(root / "images" / "img_00.png", np.zeros((8, 12, 3), np.uint8))
    one_line_error(lambda: discover_segmentation(root), "img_00", "same stem")


def test_bad_classes_files_are_named(tmp_path: Path) -> None:
    root = write_pairs(tmp_path / "d", 2)
    given = tmp_path / "c.txt"
    for text, part in [("sky 1 2 3\nroad\n", "line 2"), ("sky 1 2 3\nroad 1 2 3\n", "listed twice"),
                       ("sky 1 2 300\nroad 4 5 6\n", "0..255"), ("# nothing\n", "no classes")]:
        given.write_text(text)
        one_line_error(lambda: discover_segmentation(root, classes_file=given), str(given), part)
    one_line_error(lambda: discover_segmentation(root, classes_file=tmp_path / "no.txt"), "no.txt", "--classes-file")


def test_bad_csv_listings_are_named(tmp_path: Path) -> None:
    write_pairs(tmp_path / "d", 2)
    listing = tmp_path / "list.csv"
    listing.write_text("path,label\nd/images/img_00.jpg,d/masks/img_00.png\n")
    one_line_error(lambda: discover_segmentation(listing), "list.csv", "image,mask")
    pair = "d/images/img_00.jpg,d/masks/img_00.png"
    listing.write_text(f"image,mask,split\n{pair},train\n{pair},val\n")
    one_line_error(lambda: discover_segmentation(listing), "list.csv line 3", "leakage")
    listing.write_text("image,mask\nd/images/gone.jpg,d/masks/img_00.png\n")
    one_line_error(lambda: discover_segmentation(listing), "gone.jpg", "does not exist")


# joint transforms, padding and batches


def classes_of(image: torch.Tensor) -> torch.Tensor:
    """The class each pixel's un-normalised grey level stands for (nearest of LEVELS)."""
    value = (image[0] * PRE.std[0] + PRE.mean[0]) * 255
    return (value[..., None] - torch.tensor(LEVELS, dtype=torch.float32)).abs().argmin(-1)


def interior(mask: torch.Tensor) -> torch.Tensor:
    """Labelled pixels whose 3x3 neighbours share their class: away from the edges bilinear resizing blurs."""
    height, width = mask.shape
    padded = torch.nn.functional.pad(mask, (1, 1, 1, 1), value=-1)
    keep = mask != 255
    for dy in range(3):
        for dx in range(3):
            keep &= padded[dy:dy + height, dx:dx + width] == mask
    return keep


def agreement(image: torch.Tensor, mask: torch.Tensor) -> float:
    """The share of the mask's interior pixels whose image grey level is their class's."""
    keep = interior(mask)
    assert keep.sum() >= 0.1 * mask.numel()
    return float((classes_of(image)[keep] == mask[keep]).float().mean())


def test_train_transforms_keep_image_and_mask_aligned(tmp_path: Path) -> None:
    image, mask = quadrants()
    pair = (str(save(tmp_path / "a.png", image)), str(save(tmp_path / "a_mask.png", mask)))
    dataset = SegmentationDataset([pair], PRE, 32, "light", True)
    torch.manual_seed(0)
    flipped = padded = 0
    unflipped = []
    for _ in range(60):
        x, y = dataset[0]
        assert x.shape == (3, 32, 32) and y.shape == (32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert agreement(x, y) == 1.0
        pad = y == 255
        assert ((x[:, pad] * PRE.std[0] + PRE.mean[0]) * 255).abs().max() < 1e-3 if pad.any() else True
        padded += int(pad.any())
        left, right = (y == 0).nonzero(), (y == 2).nonzero()
        if len(left) and len(right):
            flipped += int(left[:, 1].float().mean() > right[:, 1].float().mean())
        unflipped.append(agreement(x, y.flip(-1)))
    assert 0 < padded < 60 and 0 < flipped < 60
    assert min(unflipped) < 0.5  # the check catches a mask that missed its image's flip


def test_train_without_augmentation_crops_squares_of_the_resized_image(tmp_path: Path) -> None:
    image, mask = quadrants()
    pair = (str(save(tmp_path / "a.png", image)), str(save(tmp_path / "m.png", mask)))
    for augment in ("none", "strong"):
        x, y = SegmentationDataset([pair], PRE, 24, augment, True)[0]
        assert x.shape == (3, 24, 24) and y.shape == (24, 24)
        assert set(y.unique().tolist()) <= {0, 1, 2, 3, 255}
        if augment == "none":
            assert (y != 255).all() and agreement(x, y) == 1.0


def test_eval_items_keep_the_aspect_ratio(tmp_path: Path) -> None:
    image, mask = quadrants(60, 36)
    pair = (str(save(tmp_path / "a.png", image)), str(save(tmp_path / "m.png", mask)))
    x, y = SegmentationDataset([pair], PRE, 24, "strong", False)[0]
    assert x.shape == (3, 24, 40) and y.shape == (24, 40)
    assert agreement(x, y) == 1.0 and (y != 255).all()


@pytest.mark.parametrize("shape", [(17, 23), (3, 31, 9), (2, 3, 33, 64)])
def test_pad_to_stride_and_crop_to_round_trip(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    padded, size = pad_to_stride(x, 32, -7.0)
    assert size == shape[-2:]
    assert padded.shape[-2] % 32 == 0 and padded.shape[-1] % 32 == 0
    assert padded.shape[-2] - shape[-2] < 32 and padded.shape[-1] - shape[-1] < 32
    assert torch.equal(crop_to(padded, size), x)
    assert (padded[..., size[0]:, :] == -7).all() and (padded[..., size[1]:] == -7).all()


def test_pad_collate_pads_to_the_stride_with_ignore_in_the_masks() -> None:
    items = [(torch.rand(3, 17, 23), torch.randint(0, 3, (17, 23))),
             (torch.rand(3, 30, 9), torch.randint(0, 3, (30, 9)))]
    images, masks = pad_collate(stride=8, ignore_index=99)(items)
    assert images.shape == (2, 3, 32, 24) and masks.shape == (2, 32, 24) and masks.dtype == torch.int64
    for i, (image, mask) in enumerate(items):
        h, w = mask.shape
        assert torch.equal(images[i, :, :h, :w], image) and torch.equal(masks[i, :h, :w], mask)
        assert (masks[i, h:] == 99).all() and (masks[i, :, w:] == 99).all()
        assert (images[i, :, h:] == 0).all() and (images[i, :, :, w:] == 0).all()


def test_a_loader_batches_eval_items_of_different_sizes(tmp_path: Path) -> None:
    pairs = []
    for name, (w, h) in {"wide": (60, 36), "tall": (30, 50)}.items():
        image, mask = quadrants(w, h)
        pairs.append((str(save(tmp_path / f"{name}.png", image)), str(save(tmp_path / f"{name}_m.png", mask))))
    loader = DataLoader(SegmentationDataset(pairs, PRE, 24, "none", False), batch_size=2, collate_fn=pad_collate(32))
    images, masks = next(iter(loader))
    assert images.shape == (2, 3, 64, 64) and masks.shape == (2, 64, 64)  # 24x40 and 40x24 padded to 64x64
    assert (masks[0, 24:] == 255).all() and (masks[1, :, 24:] == 255).all()


def test_splits_round_trip_through_json(tmp_path: Path) -> None:
    splits = SegmentationSplits(["bg", "road"], [("a.png", "a_m.png")], [("b.png", "b_m.png")],
                                [("c.png", "c_m.png")], 11, [(0, 0, 0), ROAD], [("x.txt", "not an image")], [SKY])
    again = SegmentationSplits.from_dict(json.loads(json.dumps(splits.to_dict())))
    assert again == splits
    found = discover_segmentation(write_pairs(tmp_path / "d", 4))
    assert SegmentationSplits.from_dict(json.loads(json.dumps(found.to_dict()))) == found
