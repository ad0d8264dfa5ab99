"""A run killed (SIGKILL) at any step and resumed ends exactly where the uninterrupted run ends.

Each run is a subprocess. The interrupted one kills itself at a chosen optimizer step, at an epoch
boundary or in the middle of an epoch; ``--resume`` then continues it from its last checkpoint.
Histories (every column but the time), metrics.json and every tensor of model.safetensors must be
identical to those of the same command run without interruption.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import write_class_images, write_split_folders
from tests.losses.conftest import write_domain

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import lightning.pytorch as pl
    import cvtransfer

    class KillAt(pl.Callback):
        def __init__(self, step):
            self.step = step
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == self.step:
                os.kill(os.getpid(), signal.SIGKILL)

    command, options, kill_at, resume = json.loads(sys.argv[1])
    callbacks = [KillAt(kill_at)] if kill_at is not None else []
    if resume:
        cvtransfer.resume(options["out"], callbacks=callbacks)
    elif command == "fit":
        cvtransfer.fit(cvtransfer.Config(**options), callbacks=callbacks)
    else:
        cvtransfer.adapt(cvtransfer.Config(**options), callbacks=callbacks)
""")


def run(command: str, options: dict, kill_at: int | None = None, resume: bool = False) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])}
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps([command, options, kill_at, resume])],
                          env=env, capture_output=True, text=True, timeout=300)
    if kill_at is None and done.returncode != 0:
        raise AssertionError(done.stderr[-3000:])
    return done.returncode


def outcome(run_dir: Path) -> tuple[list[dict[str, str]], dict, dict[str, torch.Tensor]]:
    with (run_dir / "history.csv").open() as handle:
        history = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("data", None)
    for row in metrics.get("results", []):  # a few-shot run's episode results: their time is not a result
        row.pop("seconds", None)
    return history, metrics, load_file(run_dir / "model.safetensors")


def assert_same(resumed: Path, reference: Path) -> None:
    history, metrics, tensors = outcome(resumed)
    expected_history, expected_metrics, expected_tensors = outcome(reference)
    assert history == expected_history
    assert metrics == expected_metrics
    assert tensors.keys() == expected_tensors.keys()
    for name, tensor in expected_tensors.items():
        assert torch.equal(tensors[name], tensor), name


BASE = dict(backbone="tinycnn", weights="none", image_size=16, batch_size=8, lr=3e-3, progress=False,
            accelerator="cpu", num_workers=0, report=False, augment="light", drop_rate=0.3, seed=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_split_folders(tmp_path_factory.mktemp("data") / "data", 8, 3, 3)


@pytest.fixture(scope="module")
def fit_reference(images: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    options = {**BASE, "data": str(images), "epochs": 3, "mixup": 0.2,
               "out": str(tmp_path_factory.mktemp("ref") / "run")}
    run("fit", options)
    return options, Path(options["out"])


# 24 training images, batch 8: 3 steps per epoch. Step 3 ends epoch 1; step 4 is inside epoch 2.
@pytest.mark.parametrize("kill_at", [3, 4, 8], ids=["epoch-boundary", "mid-epoch", "mid-last-epoch"])
def test_fit_killed_and_resumed_matches_the_uninterrupted_run(fit_reference: tuple[dict, Path], tmp_path: Path,
                                                              kill_at: int) -> None:
    reference_options, reference = fit_reference
    options = {**reference_options, "out": str(tmp_path / "run")}
    assert run("fit", options, kill_at=kill_at) != 0  # killed
    assert not (tmp_path / "run" / "model.safetensors").exists()
    run("fit", options, resume=True)
    assert_same(tmp_path / "run", reference)


def test_adapt_killed_mid_epoch_and_resumed_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    write_domain(source, 10, seed=0, background=(0, 40))
    write_domain(target, 10, seed=1, background=(120, 200))
    options = {**BASE, "data": str(source), "target": str(target), "method": "dann", "epochs": 3,
               "iters_per_epoch": 3, "bottleneck_dim": 16, "discriminator_dim": 16, "selection_samples": 20,
               "shift_samples": 20, "optimizer": "sgd", "lr": 0.01, "scheduler": "inv"}
    run("adapt", {**options, "out": str(tmp_path / "reference")})
    assert run("adapt", {**options, "out": str(tmp_path / "run")}, kill_at=5) != 0
    run("adapt", {**options, "out": str(tmp_path / "run")}, resume=True)
    assert_same(tmp_path / "run", tmp_path / "reference")


def test_fewshot_meta_training_killed_mid_epoch_and_resumed_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_class_images(data, {name: 4 for name in "abcdefgh"})  # 8 classes: 6 train, 2 val (whole classes)
    options = {**BASE, "data": str(data), "task": "fewshot", "augment": "light", "ways": 2, "shots": "1", "queries": 2,
               "episodes": 4, "train_ways": 3, "episodes_per_epoch": 3, "epochs": 3, "val_split": 0.25}
    run("fit", {**options, "out": str(tmp_path / "reference")})
    assert run("fit", {**options, "out": str(tmp_path / "run")}, kill_at=4) != 0
    run("fit", {**options, "out": str(tmp_path / "run")}, resume=True)
    assert_same(tmp_path / "run", tmp_path / "reference")
