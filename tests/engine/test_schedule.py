"""Effective per-group learning rates under every schedule: discriminative ratios survive."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from cvtransfer.api import fit
from cvtransfer.config import Config
from cvtransfer.engine.history import read_history
from cvtransfer.engine.schedule import build_optimizer, build_scheduler, lr_factor
from tests.conftest import tiny_config, write_class_images


class LRProbe(pl.Callback):
    """Records every group's LR as the optimizer sees it, before each step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        self.steps.append({g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups})


@pytest.mark.parametrize("scheduler", ["cosine", "step", "onecycle", "none"])
def test_layer_decay_ratios_hold_at_every_step(scheduler: str, split_dir: Path, tmp_path: Path) -> None:
    probe = LRProbe()
    fit(tiny_config(split_dir, tmp_path / "run", strategy="full", layer_decay=0.5, head_lr_mult=10.0, lr=1e-3,
                    scheduler=scheduler, epochs=3, warmup_epochs=1.0), callbacks=[probe])
    for step in probe.steps[1:]:
        head = step["head"]
        # tinycnn has 4 groups: group i gets lr * 0.5 ** (4 - i); the head gets 10 * lr.
        for i in range(4):
            assert step[f"group{i}"] == pytest.approx(head / 10 * 0.5 ** (4 - i), rel=1e-6)
            assert step[f"group{i}.no_decay"] == pytest.approx(step[f"group{i}"], rel=1e-6)
    first_head = probe.steps[0]["head"]
    if scheduler == "onecycle":
        assert first_head < 1e-3  # starts low, rises to the peak
        assert max(s["head"] for s in probe.steps) == pytest.approx(1e-2, rel=0.05)
    else:
        assert first_head == pytest.approx(1e-2 * lr_factor(0, 9, 3, scheduler), rel=1e-6)  # warm-up


def test_lr_factor_shapes() -> None:
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 0, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    assert [lr_factor(s, 90, 0, "step") for s in (0, 30, 60)] == pytest.approx([1.0, 0.1, 0.01])
    assert lr_factor(50, 100, 0, "none") == 1.0


@pytest.mark.parametrize("kind", ["cosine", "step", "onecycle", "inv", "none"])
@pytest.mark.parametrize("total", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("warmup_epochs", [0.0, 1.0])
def test_every_schedule_runs_any_number_of_steps(kind: str, total: int, warmup_epochs: float) -> None:
    config = Config(scheduler=kind, optimizer="sgd", momentum=0.9, epochs=4, warmup_epochs=warmup_epochs,
                    lr=0.1)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer(config, [{"params": [param], "lr": 0.1, "name": "head"}])
    scheduler = build_scheduler(config, optimizer, total)
    lrs = []
    for _ in range(total):  # as Lightning does: the LR of each step, then one scheduler step
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert all(0 < lr <= 0.1 * (1 + 1e-9) for lr in lrs), lrs
    if kind == "onecycle" and total > 1:
        assert lrs[0] == pytest.approx(0.1 / 25) and max(lrs) == pytest.approx(0.1)
        assert 0.85 <= optimizer.param_groups[0]["momentum"] <= 0.95
    restored = build_scheduler(config, optimizer, total)
    restored.load_state_dict(scheduler.state_dict())  # what --resume does
    assert restored.last_epoch == scheduler.last_epoch


def test_onecycle_trains_a_short_run(tmp_path: Path) -> None:
    # 60 images, batch 32: 48 training images give one step per epoch, four in all.
    data = tmp_path / "data"
    write_class_images(data, {"a": 20, "b": 20, "c": 20})
    run = fit(tiny_config(data, tmp_path / "run", scheduler="onecycle", epochs=4, batch_size=32))
    history = read_history(run.path / "history.csv")
    assert len(history) == 4 and (run.path / "model.safetensors").is_file()
    assert history[0]["lr"] != history[-1]["lr"]
