"""The fit pipeline through the Python API: outputs, determinism, resume, cache, imbalance options."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from safetensors.torch import load_file

import cvtransfer
from cvtransfer.data import features as features_module
from cvtransfer.engine.history import read_history
from cvtransfer.errors import ConfigError, CvTransferError
from tests.conftest import tiny_config


class CrashDuringEpoch(pl.Callback):
    """Dies in the middle of ``epoch`` (after its first batch), like a killed job."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object,
                             batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            raise RuntimeError("simulated crash")


def test_run_folder_has_every_output(split_dir: Path, tmp_path: Path) -> None:
    run = cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", epochs=3))
    names = {p.name for p in run.path.iterdir()}
    assert {"config.yaml", "history.csv", "metrics.json", "curves.png", "confusion.png", "model.safetensors",
            "classes.json", "splits.json", "checkpoints"} <= names
    assert json.loads((run.path / "classes.json").read_text()) == ["a", "b", "c"]
    metrics = run.metrics
    for key in ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc",
                "confusion_matrix", "per_class", "class_names"):
        assert key in metrics
    assert metrics["split"] == "test" and metrics["num_samples"] == 12
    assert set(metrics["per_class"]["a"]) == {"precision", "recall", "f1", "support"}
    assert sum(map(sum, metrics["confusion_matrix"])) == 12
    assert metrics["diagnosis"]["verdict"] in {"overfitting", "underfitting", "good fit"}
    with (run.path / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert {"train_loss", "val_loss", "val_accuracy", "lr"} <= set(rows[0])


def test_config_yaml_reruns_the_same_run(split_dir: Path, tmp_path: Path) -> None:
    run = cvtransfer.fit(tiny_config(split_dir, tmp_path / "run"))
    again = cvtransfer.Config.load(run.path / "config.yaml", out=str(tmp_path / "again"))
    assert again.replace(out=run.config.out) == run.config


def test_same_seed_same_numbers(split_dir: Path, tmp_path: Path) -> None:
    runs = [cvtransfer.fit(tiny_config(split_dir, tmp_path / f"run{i}", epochs=2, augment="light")) for i in range(2)]
    histories = [[{k: v for k, v in row.items() if k != "seconds"} for row in r.history] for r in runs]
    assert histories[0] == histories[1]
    weights = [load_file(r.path / "model.safetensors") for r in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_out_folder_with_a_run_is_not_overwritten(split_dir: Path, tmp_path: Path) -> None:
    cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", epochs=1))
    with pytest.raises(ConfigError, match=r"already holds a run.*--resume"):
        cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", epochs=1))


@pytest.mark.parametrize("mistake", [{"backbone": "resnt18"}, {"data": "missing"}, {"weights": "nope.pth"}])
def test_a_user_error_leaves_no_half_made_run_folder(mistake: dict, split_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CvTransferError):
        cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", epochs=1).replace(**mistake))
    assert not (tmp_path / "run").exists()
    # the corrected command runs (it is not told the folder "already holds a run")
    assert cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", epochs=1)).metrics["accuracy"] >= 0


def test_a_user_error_keeps_what_an_existing_out_folder_held(split_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(CvTransferError):
        cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", backbone="resnt18"))
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["notes.txt"]


def test_interrupted_run_resumes_from_last_checkpoint(split_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(split_dir, tmp_path / "run", epochs=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cvtransfer.fit(config, callbacks=[CrashDuringEpoch(2)])
    assert [int(r["epoch"]) for r in read_history(tmp_path / "run" / "history.csv")] == [0, 1]
    assert not (tmp_path / "run" / "model.safetensors").exists()
    run = cvtransfer.resume(tmp_path / "run")
    assert [int(r["epoch"]) for r in run.history] == [0, 1, 2, 3]
    assert (run.path / "model.safetensors").is_file() and run.metrics["accuracy"] >= 0


@pytest.mark.parametrize(("overrides", "message"), [
    ({"backbone": "lenet"}, "--backbone cannot change when resuming"),
    ({"strategy": "linear", "lr": 0.1}, "--lr, --strategy cannot change when resuming"),
    ({"epochs": 1}, "has already trained 2 epochs: --epochs must be at least 2"),
])
def test_resume_refuses_overrides_it_cannot_honour_and_leaves_config_yaml_alone(
        overrides: dict, message: str, split_dir: Path, tmp_path: Path) -> None:
    run = cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", epochs=2)).path
    saved = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=message):
        cvtransfer.resume(run, **overrides)
    assert (run / "config.yaml").read_text() == saved  # so a plain --resume still works
    assert [int(r["epoch"]) for r in cvtransfer.resume(run, epochs=3).history] == [0, 1, 2]


class ThawProbe(pl.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, frozenset[int], list[str], int]] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        groups = [g["name"] for g in optimizer.param_groups]
        self.seen.append((trainer.current_epoch, pl_module.network.frozen_groups, groups, len(optimizer.state)))


def test_resumed_gradual_run_restores_thawed_groups_and_optimizer(split_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(split_dir, tmp_path / "run", strategy="gradual", epochs=4, freeze_epochs=1,
                         unfreeze_every=1, scheduler="onecycle")
    first = ThawProbe()
    with pytest.raises(RuntimeError):
        cvtransfer.fit(config, callbacks=[first, CrashDuringEpoch(2)])
    second = ThawProbe()
    cvtransfer.resume(tmp_path / "run", callbacks=[second])
    epoch, frozen, groups, state_entries = second.seen[0]
    assert epoch == 2 and frozen == frozenset({0, 1})  # 4 groups, two thawed by epoch 2
    assert groups == first.seen[0][2]  # every group existed from the start and was restored
    assert state_entries > 0  # optimizer moments came back from the checkpoint
    assert [s[1] for s in first.seen] == [frozenset({0, 1, 2, 3}), frozenset({0, 1, 2}), frozenset({0, 1})]


def test_l2sp_reference_weights_survive_resume(split_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(split_dir, tmp_path / "run", strategy="l2sp", epochs=3)
    with pytest.raises(RuntimeError):
        cvtransfer.fit(config, callbacks=[CrashDuringEpoch(1)])
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    reference = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("loss_terms.terms.l2sp.w0__")}
    trained = checkpoint["state_dict"]["network.backbone.stem.0.weight"]
    assert not torch.equal(reference["loss_terms.terms.l2sp.w0__stem__0__weight"], trained)

    class CheckReference(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            restored = pl_module.loss_terms.terms.l2sp.w0__stem__0__weight
            assert torch.equal(restored, reference["loss_terms.terms.l2sp.w0__stem__0__weight"])

    cvtransfer.resume(tmp_path / "run", callbacks=[CheckReference()])


def test_linear_computes_features_once_and_reuses_the_cache(
    split_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = features_module.compute_features

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(len(args[1]))
        return original(*args, **kwargs)

    monkeypatch.setattr(features_module, "compute_features", counting)
    cvtransfer.fit(tiny_config(split_dir, tmp_path / "one", strategy="linear", epochs=5))
    assert calls == [30, 12]  # train and val once, not once per epoch
    cvtransfer.fit(tiny_config(split_dir, tmp_path / "two", strategy="linear", epochs=5))
    assert calls == [30, 12]  # the second run reads the cache


@pytest.mark.parametrize("head", ["logistic", "svm"])
def test_sklearn_heads_become_the_linear_head(head: str, split_dir: Path, tmp_path: Path) -> None:
    source = cvtransfer.fit(tiny_config(split_dir, tmp_path / "source", epochs=6))
    run = cvtransfer.fit(tiny_config(split_dir, tmp_path / head, strategy="linear", head=head,
                                     weights=str(source.path)))
    assert len(run.history) == 1
    assert run.metrics["accuracy"] == pytest.approx(run.evaluate()["accuracy"])
    assert run.history[0]["train_accuracy"] > 0.5


def test_imbalance_options_run(tmp_path: Path) -> None:
    from tests.conftest import write_class_images

    write_class_images(tmp_path / "imb", {"many": 24, "few": 4})
    for options in ({"class_weights": "auto"}, {"balanced_sampler": True}):
        run = cvtransfer.fit(tiny_config(tmp_path / "imb", tmp_path / f"run{len(options)}{next(iter(options))}",
                                         val_split=0.25, **options))
        assert run.metrics["num_samples"] == 7


def test_early_stopping_stops(split_dir: Path, tmp_path: Path) -> None:
    run = cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", epochs=30, early_stop=1, lr=1e-12,
                                     monitor="val_accuracy"))
    assert len(run.history) < 30


def test_mixup_and_cutmix_train(split_dir: Path, tmp_path: Path) -> None:
    run = cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", mixup=0.2, cutmix=1.0))
    assert len(run.history) == 2


def test_evaluate_and_predict(split_dir: Path, tmp_path: Path) -> None:
    run = cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", epochs=6))
    external = cvtransfer.evaluate(run.path, split_dir / "val")
    assert external["split"] == "train" and external["num_samples"] == 12  # plain class folders: all images
    assert (run.path / "metrics_external.json").is_file()
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "bad.png").write_bytes(b"nope")
    rows = cvtransfer.predict(run.path, [split_dir / "test" / "a", tmp_path / "loose"], top_k=2,
                              out=tmp_path / "p.csv")
    assert len(rows) == 4 and all(r["label"] in {"a", "b", "c"} for r in rows)
    assert all(len(r["top_k"].split(";")) == 2 for r in rows)
    assert (tmp_path / "p.csv").read_text().startswith("path,label,probability,top_k")


def test_segment_and_detect_are_fit_with_their_task(monkeypatch: pytest.MonkeyPatch) -> None:
    import cvtransfer
    from cvtransfer.engine import commands

    seen = []
    monkeypatch.setattr(commands, "fit_run", lambda config, callbacks: seen.append(config))
    cvtransfer.segment(data="masks/", decoder="fpn")
    cvtransfer.detect(cvtransfer.Config(data="boxes/", task="classification"), detector="fcos")
    assert [(c.task, c.data) for c in seen] == [("segmentation", "masks/"), ("detection", "boxes/")]
    assert seen[0].decoder == "fpn" and seen[1].detector == "fcos"
