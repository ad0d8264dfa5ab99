"""Values that used to train silently wrong, or crash with a traceback, are refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import cvtransfer
from cvtransfer import Config
from cvtransfer.errors import ConfigError, TrainingDiverged
from tests.conftest import tiny_config


@pytest.mark.parametrize(("values", "message"), [
    ({"lr": float("inf")}, "--lr must be a finite number"),
    ({"lr": float("nan")}, "--lr must be a finite number"),
    ({"weight_decay": float("nan")}, "--weight-decay must be a finite number"),
    ({"lr": 0.0}, "--lr must be > 0"),
    ({"seed": -1}, "--seed must be between 0"),
    ({"val_split": 0.9, "test_split": 0.9}, "leave less than 5% of the data for training"),
    ({"devices": "two"}, "--devices must be auto, a count"),
    ({"distributed": "ddpp"}, "unknown --distributed strategy 'ddpp': did you mean ddp"),
    ({"accelerator": "gpx"}, "unknown --accelerator 'gpx'"),
])
def test_bad_values_are_one_line_errors(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Config(**values)
    assert "\n" not in str(caught.value)


def test_yaml_numbers_written_without_a_dot_are_numbers(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("lr: 1e-3\nweight_decay: 5e-4\nepochs: '3'\n")
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["lr"] == "1e-3"  # what YAML gives
    config = Config.load(tmp_path / "c.yaml")
    assert (config.lr, config.weight_decay, config.epochs) == (1e-3, 5e-4, 3)
    (tmp_path / "bad.yaml").write_text("lr: fast\n")
    with pytest.raises(ConfigError, match="--lr must be a float, not 'fast'"):
        Config.load(tmp_path / "bad.yaml")


@pytest.mark.parametrize(("options", "message"), [
    ({"strategy": "linear", "augment": "strong"}, "--augment strong does not apply to --strategy linear"),
    ({"strategy": "linear", "mixup": 0.4}, "--mixup 0.4 does not apply to --strategy linear"),
    ({"strategy": "full", "head": "svm"}, "--head svm fits a classifier on cached features"),
])
def test_options_a_strategy_would_ignore_are_refused(split_dir: Path, tmp_path: Path, options: dict,
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", **options))
    assert not (tmp_path / "run").exists()


def test_a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(split_dir: Path, tmp_path: Path) -> None:
    import lightning.pytorch as pl

    class PoisonWeights(pl.Callback):
        """Turns a weight into NaN at the start of epoch 2, as a too-high LR eventually does."""

        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if trainer.current_epoch == 1:
                next(pl_module.parameters()).data.fill_(float("nan"))

    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="the training loss became nan at epoch 2, step 4"):
        cvtransfer.fit(tiny_config(split_dir, run_dir, epochs=3), callbacks=[PoisonWeights()])
    import torch

    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and all(torch.isfinite(t).all() for t in last["state_dict"].values()
                                      if t.is_floating_point())
    assert not (run_dir / "model.safetensors").exists()


def test_a_fifo_among_the_images_is_skipped_not_waited_for(tmp_path: Path) -> None:
    import os

    from cvtransfer.data.images import check_image, list_files
    from tests.conftest import write_class_images

    write_class_images(tmp_path / "data", {"a": 4, "b": 4})
    fifo = tmp_path / "data" / "a" / "pipe.png"
    os.mkfifo(fifo)
    assert fifo not in list(list_files(tmp_path / "data"))
    assert check_image(fifo) == "not a regular file"  # a CSV may list it: refused, never opened
    assert check_image(tmp_path / "missing.png") == "does not exist"


def test_out_inside_the_data_is_refused(split_dir: Path) -> None:
    before = sorted(split_dir.rglob("*"))
    for out in (split_dir / "runs" / "first", split_dir / "train" / "a" / "run"):
        with pytest.raises(ConfigError, match="is inside the data folder"):
            cvtransfer.fit(tiny_config(split_dir, out))
    assert sorted(split_dir.rglob("*")) == before


def test_a_weights_file_of_only_wrong_shapes_is_not_loaded(split_dir: Path, tmp_path: Path) -> None:
    """BatchNorm's step counters have the same shape in every model: they must not count as a match."""
    import torch
    from safetensors.torch import save_file

    from cvtransfer.models.backbones import create_backbone

    state = create_backbone("resnet18", pretrained=False).module.state_dict()
    wrong = {key: (value if key.endswith("num_batches_tracked") else torch.zeros(*value.shape, 2))
             for key, value in state.items()}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    from cvtransfer.errors import WeightsError

    with pytest.raises(WeightsError, match=r"no tensor of .*wrong\.safetensors matches backbone 'resnet18'"):
        cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", backbone="resnet18",
                                   weights=str(tmp_path / "wrong.safetensors"), allow_partial_weights=True))
    assert not (tmp_path / "run").exists()
