"""adapt and shift end to end: CLI and API, every method, selection, feature files, errors, resume."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import yaml
from torch.utils.data import WeightedRandomSampler

import cvtransfer
from cvtransfer.data.domains import discover_domains
from cvtransfer.data.transforms import Preprocessing
from cvtransfer.engine.streams import paired_stream
from cvtransfer.errors import ConfigError, CvTransferError
from cvtransfer.losses import adaptation_methods
from cvtransfer.run import predict_probs
from tests.conftest import write_class_images
from tests.losses.conftest import adapt_config, write_domain
from tests.test_cli import run_cli

TINY = ["--backbone", "tinycnn", "--weights", "none", "--image-size", "16", "--epochs", "2", "--batch-size", "8",
        "--no-progress", "--accelerator", "cpu", "--num-workers", "0", "--augment", "none",
        "--bottleneck-dim", "16", "--iters-per-epoch", "4", "--discriminator-dim", "16",
        "--selection-samples", "20", "--shift-samples", "20"]


def history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_adapt_writes_a_complete_run(domains: tuple[Path, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    source, target = domains
    run = tmp_path / "run"
    code, out, err = run_cli(["adapt", "--source", str(source), "--target", str(target), "--method", "dann",
                              *TINY, "--out", str(run)], monkeypatch, capsys)
    assert code == 0, err
    assert "method dann: test accuracy" in out and "kept epoch" in out and "proxy_a_distance" in out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    # adapt's own defaults apply under what the command line gives
    assert saved["method"] == "dann" and saved["optimizer"] == "sgd" and saved["scheduler"] == "inv"
    assert saved["target"] == str(target) and saved["epochs"] == 2
    rows = history(run)
    assert len(rows) == 2
    for column in ("target_accuracy", "val_snd", "val_entropy", "val_dev", "train_transfer_loss",
                   "train_domain_accuracy"):
        assert column in rows[0] and rows[-1][column] != "", column
    shift = json.loads((run / "shift.json").read_text())
    for stage in ("before", "after", "after_bottleneck"):
        assert 0.0 <= shift[stage]["proxy_a_distance"] <= 2.0 and shift[stage]["mmd2"] > -0.1
    splits = json.loads((run / "splits.json").read_text())
    assert len(splits["target_train"]) == 30 and len(splits["target_test"]) == 15
    assert all(label == -1 or label in (0, 1, 2) for _, label in splits["target_train"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_samples"] == 15  # evaluated on the target test images
    assert (run / "model.safetensors").is_file()
    report = (run / "report.html").read_text()  # written by adapt too; the embedding shows both domains
    assert "6 source and 15 target images" in report and '<section id="grad-cam">' in report


@pytest.mark.parametrize("method", sorted(adaptation_methods()))
def test_every_method_runs_through_the_api(method: str, domains: tuple[Path, Path], tmp_path: Path) -> None:
    source, target = domains
    config = adapt_config(source, target, tmp_path / "run", method=method, epochs=1, source_epochs=1,
                          mcc=1.0 if method == "dann" else 0.0)
    run = cvtransfer.adapt(config)
    assert 0.0 <= run.metrics["accuracy"] <= 1.0
    columns = history(run.path)[0]
    assert columns["train_transfer_loss"] != "" and columns["train_ce"] != ""
    if method == "dann":
        assert columns["train_mcc_loss"] != ""
    if method == "adda":  # the source-only first stage is its own finished run inside the run folder
        assert (run.path / "source_stage" / "model.safetensors").is_file()


def test_adaptation_beats_source_only_on_the_target(domains: tuple[Path, Path], tmp_path: Path) -> None:
    source, target = domains
    accuracy = {}
    for method in ("source-only", "coral", "dann"):
        config = adapt_config(source, target, tmp_path / method, method=method, epochs=3, iters_per_epoch=30,
                              select_by="none")
        accuracy[method] = cvtransfer.adapt(config).metrics["accuracy"]
    # the dark-to-bright background shift fools the source-only model; aligning the features undoes it
    assert accuracy["coral"] > accuracy["source-only"] + 0.2, accuracy
    assert accuracy["dann"] > accuracy["source-only"] + 0.2, accuracy


@pytest.mark.parametrize("select_by", ["entropy", "snd"])
def test_the_kept_weights_are_those_of_the_best_selection_score(select_by: str, domains: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    import torch

    source, target = domains
    run = cvtransfer.adapt(adapt_config(source, target, tmp_path / "run", epochs=3, select_by=select_by))
    values = [float(row[f"val_{select_by}"]) for row in history(run.path)]
    best = (np.argmin if select_by == "entropy" else np.argmax)(values)
    checkpoint = torch.load(run.path / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["epoch"] == best  # Lightning counts epochs from 0, like history.csv's first row


def test_class_mismatch_is_a_clear_error(domains: tuple[Path, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    source, _ = domains
    other = tmp_path / "other"
    write_domain(other, 3, seed=5, background=(100, 200))
    (other / "c").rename(other / "zebra")
    code, _, err = run_cli(["adapt", "--source", str(source), "--target", str(other), *TINY,
                            "--out", str(tmp_path / "run")], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "zebra" in err and str(other) in err
    with pytest.raises(CvTransferError, match="needs the source"):
        cvtransfer.adapt(target=str(other))


def write_feature_domain(file: Path, count: int, shift: float, seed: int) -> None:
    """Three Gaussian classes in 12 dimensions; the domain moves every point by ``shift``."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 12) * 4.0
    labels = np.repeat(np.arange(3), count)
    features = centres[labels] + rng.normal(size=(len(labels), 12)) + shift
    np.savez(file, features=features.astype(np.float32), labels=labels + 1)  # labels 1..3, like the .mat files


def test_adapt_and_shift_on_feature_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    source, target = tmp_path / "amazon.npz", tmp_path / "webcam.npz"
    write_feature_domain(source, 30, 0.0, seed=0)
    write_feature_domain(target, 20, 1.5, seed=1)
    config = adapt_config(source, target, tmp_path / "run", backbone="tinycnn", epochs=2, mlp_dim=32, iters_per_epoch=40,
                          val_split=0.2, report=True)
    titles: list[str] = []
    monkeypatch.setattr("cvtransfer.run.plot_curves", lambda history, path, title, **kw: titles.append(title))
    run = cvtransfer.adapt(config)
    assert titles == ["MLP on features (12 dims) / dann (full)"]  # curves.png, named like the report
    assert "precomputed features, not images" in (run.path / "report.html").read_text()
    assert run.metrics["num_samples"] == 60 and run.metrics["accuracy"] > 0.5  # transductive: all target rows
    assert run.classes == ["1", "2", "3"]
    shift = json.loads((run.path / "shift.json").read_text())
    # before and after are measured in one space (the MLP's); the files' own 12-d features are labelled apart
    assert shift["spaces"]["before"].startswith("the MLP's 32-d") and shift["spaces"]["after"].startswith("the MLP's 32-d")
    assert "12-d" in shift["spaces"]["input"] and shift["input"]["proxy_a_distance"] > 1.0
    from cvtransfer.cli import adaptation_summary

    summary = adaptation_summary(run)
    assert "shift (the MLP's 32-d features, before -> after)" in summary and "shift in the feature files' own 12-d" in summary
    reloaded = cvtransfer.Run(run.path)  # the MLP is rebuilt from the exported architecture
    probs, labels = predict_probs(reloaded.model, [(f"{target}#0", 0), (f"{target}#59", 2)], reloaded.preprocessing)
    assert probs.shape == (2, 3) and labels.tolist() == [0, 2]
    code, out, err = run_cli(["shift", str(source), str(target), "--out", str(tmp_path / "shift"),
                              "--shift-samples", "50"], monkeypatch, capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "shift" / "shift.json").read_text())
    assert result["feature_dim"] == 12 and result["source_samples"] == 50 and result["target_samples"] == 50
    assert result["proxy_a_distance"] > 1.0 and "proxy A-distance" in out


def test_shift_grows_with_the_domain_gap(domains: tuple[Path, Path], tmp_path: Path) -> None:
    source, target = domains
    same = tmp_path / "same"
    write_domain(same, 10, seed=9, background=(0, 70))
    options = dict(backbone="tinycnn", weights="none", image_size=16, accelerator="cpu", num_workers=0,
                   shift_samples=30)
    near = cvtransfer.shift(source, same, **options)
    far = cvtransfer.shift(source, target / "train", out=tmp_path / "out", **options)
    assert far["mmd2"] > near["mmd2"] and far["proxy_a_distance"] > near["proxy_a_distance"]
    assert json.loads((tmp_path / "out" / "shift.json").read_text())["mmd2"] == pytest.approx(far["mmd2"])


def test_resume_adds_epochs(domains: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture) -> None:
    source, target = domains
    run = cvtransfer.adapt(adapt_config(source, target, tmp_path / "run", epochs=1)).path
    code, out, err = run_cli(["adapt", "--resume", str(run), "--epochs", "3"], monkeypatch, capsys)
    assert code == 0, err
    assert [row["epoch"] for row in history(run)] == ["0", "1", "2"]
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 3
    assert "method dann" in out


def test_l2sp_penalty_and_class_weights_apply_to_adapt_as_to_fit(domains: tuple[Path, Path], tmp_path: Path) -> None:
    source, target = domains
    seen: dict[str, object] = {}

    class Inspect(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            seen["weights"] = pl_module.criterion.weight
            seen["terms"] = {key: type(term).__name__ for key, term in pl_module.loss_terms.terms.items()}

    run = cvtransfer.adapt(adapt_config(source, target, tmp_path / "run", epochs=1, strategy="l2sp",
                                        class_weights="auto"), callbacks=[Inspect()])
    assert seen["terms"] == {"transfer": "DomainAdversarialLoss", "l2sp": "L2SPPenalty"} and seen["weights"] is not None
    assert history(run.path)[0]["train_penalty"] not in ("", "0.0")  # beta/2 ||w_head||^2 > 0 from the start


def test_balanced_sampler_draws_the_source_classes_equally(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    for name, count in (("a", 30), ("b", 3), ("c", 3)):
        write_class_images(source, {name: count}, seed=len(name) + count)
    write_domain(target, 5, seed=1, background=(120, 230))
    config = adapt_config(source, target, tmp_path / "run", balanced_sampler=True, iters_per_epoch=50)
    splits = discover_domains(config.data, config.target, None, 0.2, 0)
    train = paired_stream(config, splits, Preprocessing(16, (0.5,) * 3, (0.5,) * 3)).train
    sampler = train.iterables["source"].sampler
    assert isinstance(sampler, WeightedRandomSampler)
    drawn = Counter(splits.train[i][1] for i in sampler)
    assert min(drawn.values()) > 0.2 * sum(drawn.values())  # about a third each, not 30 : 3 : 3


@pytest.mark.parametrize(("option", "message"), [
    ({"test_split": 0.2}, "--test-split does not apply to adapt"),
    ({"mixup": 0.4}, "--mixup does not apply to adapt"),
    ({"strategy": "linear"}, "--strategy linear trains on cached features"),
])
def test_options_adapt_cannot_honour_are_refused_before_the_run_folder(
        option: dict, message: str, domains: tuple[Path, Path], tmp_path: Path) -> None:
    source, target = domains
    with pytest.raises(ConfigError, match=message):
        cvtransfer.adapt(adapt_config(source, target, tmp_path / "run", **option))
    assert not (tmp_path / "run").exists()


def test_a_user_error_leaves_no_half_made_adaptation_folder(domains: tuple[Path, Path], tmp_path: Path) -> None:
    source, _ = domains
    with pytest.raises(CvTransferError):
        cvtransfer.adapt(adapt_config(source, tmp_path / "no-such-target", tmp_path / "run"))
    assert not (tmp_path / "run").exists()
