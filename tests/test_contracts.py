"""Contracts every registered plug-in keeps, parametrized over the registries themselves.

A task, strategy, loss term, plug-in option or score registered tomorrow is tested here with no
list to edit: it must train in a tiny run, reload from its run folder, show in the CLI help, and
(options) survive config.yaml; a score must give a finite number.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import typing
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Literal

import pytest
import torch
from typer.testing import CliRunner

import cvtransfer
from cvtransfer import Config
from cvtransfer.cli import app
from cvtransfer.config import field_types, non_optional
from cvtransfer.engine import runner
from cvtransfer.losses import LOSSES, adaptation_methods
from cvtransfer.options import declared
from cvtransfer.run import finish_run, predict_probs
from cvtransfer.scores.selection import SELECTION_SCORES, ScoreInputs
from cvtransfer.scores.transferability import SCORES
from cvtransfer.strategies import STRATEGIES
from cvtransfer.tasks import TASKS
from tests.conftest import tiny_config, write_split_folders
from tests.losses.conftest import adapt_config, write_domains
from tests.test_cli import TINY, run_cli


# -- the CLI's help, rendered wide so that every option's help is one line
@cache
def help_text(command: str) -> str:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    return result.output


def option_help(command: str, flag: str) -> str:
    """The help line of ``flag`` in ``cvtransfer COMMAND --help``."""
    for line in help_text(command).splitlines():
        if line.strip("│ ").startswith(flag + " "):
            return line
    raise AssertionError(f"cvtransfer {command} --help has no {flag}")


def listed(name: str, text: str) -> bool:
    """``name`` as a whole word of ``text`` ("cdan" is not found in "cdan+e" alone, "--freeze" not in "--freeze-epochs")."""
    return re.search(rf"(?<![\w+-]){re.escape(name)}(?![\w+-])", text) is not None


def history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# -- tiny fits, shared between the task and strategy contracts (the default task with the default strategy is one run)
@pytest.fixture(scope="module")
def fit_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[cvtransfer.Run, torch.nn.Module]]:
    """``fit_once(**options)``: a finished 1-epoch tiny run and the in-memory model it exported, made once per options."""
    root = tmp_path_factory.mktemp("contracts")
    data = write_split_folders(root / "data", 6, 3, 3)
    done: dict[str, tuple[cvtransfer.Run, torch.nn.Module]] = {}

    def fit(**options: Any) -> tuple[cvtransfer.Run, torch.nn.Module]:
        config = tiny_config(data, root / f"run{len(done)}", epochs=1, **options)
        key = json.dumps({name: value for name, value in config.to_dict().items() if name != "out"}, sort_keys=True)
        if key not in done:
            exported: list[torch.nn.Module] = []

            def spy(run_dir: Path, config: Config, classes: list[str], model: torch.nn.Module, *args: Any,
                    **kwargs: Any) -> cvtransfer.Run:
                exported.append(model)
                return finish_run(run_dir, config, classes, model, *args, **kwargs)

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(runner, "finish_run", spy)
                run = cvtransfer.fit(config)
            assert len(exported) == 1
            done[key] = run, exported[0]
        return done[key]

    return fit


def segmentation_run(tmp_path: Path) -> cvtransfer.Run:
    """A 1-epoch segmentation run on generated images and masks (its data: images/ + masks/)."""
    from tests.tasks.test_segmentation import seg_config, write_segmentation_data

    data = write_segmentation_data(tmp_path / "seg", count=10)
    return cvtransfer.fit(seg_config(data, tmp_path / "segrun", epochs=1))


def detection_run(tmp_path: Path) -> cvtransfer.Run:
    """A 1-epoch detection run on generated images with rectangles (its data: images/ + labels/, YOLO)."""
    from tests.tasks.test_detection import det_config, write_detection_data

    data = write_detection_data(tmp_path / "det", count=10)
    return cvtransfer.fit(det_config(data, tmp_path / "detrun", epochs=1))


def fewshot_run(tmp_path: Path) -> cvtransfer.Run:
    """A 1-epoch episodic run on class folders split by class: 4 training, 2 validation, 3 test classes."""
    from tests.few_shot.test_meta_training import write_pattern_classes

    pool = write_pattern_classes(tmp_path / "pool", 9, 4)
    for split, names in (("train", range(4)), ("val", range(4, 6)), ("test", range(6, 9))):
        for k in names:
            (tmp_path / "fs" / split).mkdir(parents=True, exist_ok=True)
            (pool / f"c{k:02d}").rename(tmp_path / "fs" / split / f"c{k:02d}")
    for image in (tmp_path / "fs" / "test").rglob("3.png"):  # 3 test images per class: 9 in all
        image.unlink()
    return cvtransfer.fit(data=str(tmp_path / "fs"), task="fewshot", backbone="tinycnn", weights="none", image_size=16,
                          ways=2, shots="1", queries=2, episodes=4, train_ways=2, episodes_per_epoch=2, epochs=1,
                          num_workers=0, accelerator="cpu", progress=False, out=str(tmp_path / "fsrun"))


@pytest.mark.parametrize("name", TASKS.names())
def test_task_contract(name: str, fit_once: Callable[..., tuple[cvtransfer.Run, torch.nn.Module]],
                       tmp_path: Path) -> None:
    task = TASKS.get(name)()
    if name == "segmentation":  # masks, not class folders
        run = segmentation_run(tmp_path)
        images = Path(run.config.data) / "images"
    elif name == "detection":  # boxes, not class folders
        run = detection_run(tmp_path)
        images = Path(run.config.data) / "images"
    elif name == "fewshot":  # classes split by class
        run = fewshot_run(tmp_path)
        images = Path(run.config.data) / "test" / "c06"
    else:
        run, _ = fit_once(task=name)
        images = Path(run.config.data) / "test" / "a"
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics.get("num_samples", metrics.get("num_images")) in (9, 2)
    for file in task.run_files:
        assert (run.path / file).is_file(), file
    row = history(run.path)[0]
    measured = task.train_metric or task.metric_name in task.loss_parts(run.config)  # few-shot: a part of the loss
    assert (f"train_{task.metric_name}" in row) == measured and f"val_{task.metric_name}" in row
    rows = cvtransfer.Run(run.path).predict([images], out=tmp_path / "predictions.csv")
    assert sorted({Path(r["path"]).name for r in rows}) == sorted(p.name for p in images.iterdir())
    assert listed(name, option_help("fit", "--task"))


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_contract(name: str, fit_once: Callable[..., tuple[cvtransfer.Run, torch.nn.Module]]) -> None:
    run, trained = fit_once(strategy=name)
    metrics = json.loads((run.path / "metrics.json").read_text())
    reloaded = cvtransfer.Run(run.path)
    assert reloaded.config.strategy == name
    samples = reloaded.splits().test
    expected, labels = predict_probs(trained, samples, reloaded.preprocessing)
    probs, _ = predict_probs(reloaded.model, samples, reloaded.preprocessing)  # from model.safetensors
    torch.testing.assert_close(probs, expected, rtol=1e-5, atol=1e-6)
    assert reloaded.task.evaluate(expected, labels, reloaded.classes)["accuracy"] == pytest.approx(metrics["accuracy"])
    assert listed(name, option_help("fit", "--strategy"))


# -- loss terms: on adapt (--method) when they compare source and target, else on fit (--loss)
@pytest.fixture
def small_domains(tmp_path: Path) -> tuple[Path, Path]:
    return write_domains(tmp_path, 6, 5, 3)


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_term_contract(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    term = LOSSES.get(name)
    if term.needs_target:
        source, target = request.getfixturevalue("small_domains")
        options: dict[str, Any] = {"source_epochs": 1} if term.source_stage else {}
        run = cvtransfer.adapt(adapt_config(source, target, tmp_path / "run", method=name, epochs=1,
                                            iters_per_epoch=2, shift_samples=8, selection_samples=10, **options))
        key, command, flag, images = "transfer", "adapt", "--method", target / "test" / "a"
    else:
        data = write_split_folders(tmp_path / "data", 6, 3, 3)
        run = cvtransfer.fit(tiny_config(data, tmp_path / "run", epochs=1, loss=name))
        key, command, flag, images = name, "fit", "--loss", data / "test" / "a"
    rows = history(run.path)
    assert len(rows) == 1
    for column in (f"train_{term.log_name or key + '_loss'}", *(f"train_{m}" for m in term.metric_names)):
        assert column in rows[0], f"history.csv has no {column}: {list(rows[0])}"
        assert math.isfinite(float(rows[0][column])), f"{column} = {rows[0][column]!r}"
    predictions = cvtransfer.Run(run.path).predict([images])
    assert len(predictions) == 3 and all(math.isfinite(r["probability"]) for r in predictions)
    assert listed(name, option_help(command, flag))


@pytest.mark.parametrize("name", adaptation_methods())
def test_fit_refuses_a_term_that_needs_target_images(name: str, split_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    code, _, err = run_cli(["fit", str(split_dir), *TINY, "--loss", name, "--out", str(out)], monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "adapt" in lines[0] and listed(name, lines[0]), err
    assert not out.exists()


# -- plug-in options: an option of the CLI, kept by config.yaml
OPTIONS = [(plugin, field) for _, plugin, options in declared() for field in dataclasses.fields(options)]


def other_value(name: str, default: Any) -> Any:
    """A valid value of option ``name`` other than its default (None when there is none to pick)."""
    hint = non_optional(field_types()[name])
    minimum = next(f for f in dataclasses.fields(Config) if f.name == name).metadata.get("min")
    maximum = next(f for f in dataclasses.fields(Config) if f.name == name).metadata.get("max")
    if typing.get_origin(hint) is Literal:
        return next((choice for choice in typing.get_args(hint) if choice != default), None)
    if hint is bool:
        return not default
    if hint in (int, float):
        step = 1 if hint is int else 0.25
        value = default + step if maximum is None or default + step <= maximum else default - step
        return value if minimum is None or value >= minimum else None
    return None


@pytest.mark.parametrize(("plugin", "field"), OPTIONS, ids=[f"{p}.{f.name}" for p, f in OPTIONS])
def test_plugin_option_contract(plugin: str, field: dataclasses.Field, tmp_path: Path) -> None:
    flag = "--" + field.name.replace("_", "-")
    assert listed(flag, help_text("fit")) or listed(flag, help_text("adapt")), f"{flag} ({plugin}) is in no help"
    values = [field.default, other_value(field.name, field.default)]
    for value in (v for v in values if v is not None):
        config = Config(**{field.name: value})
        config.save(tmp_path / "config.yaml")
        loaded = Config.load(tmp_path / "config.yaml")
        assert getattr(loaded, field.name) == value and type(getattr(loaded, field.name)) is type(value)
        assert loaded == config
    assert values[1] is not None or isinstance(field.default, str), f"{field.name}: no other value tried"


# -- scores: a finite number on small random inputs of three classes
def score_inputs() -> ScoreInputs:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    features = torch.randn(60, 8, generator=generator, dtype=torch.float64) + labels[:, None]
    return ScoreInputs(
        features=features, labels=labels,
        source_probs=torch.randn(60, 5, generator=generator, dtype=torch.float64).softmax(dim=1),
        target_probs=torch.randn(60, 3, generator=generator).softmax(dim=1),
        target_features=torch.randn(60, 8, generator=generator) + 0.5,
        source_features=features[:40].float(),
        source_losses=torch.rand(40, generator=generator),
    )


@pytest.mark.parametrize(("kind", "name"), [("transferability", n) for n in SCORES.names()]
                         + [("selection", n) for n in SELECTION_SCORES.names()])
def test_score_is_a_finite_number(kind: str, name: str) -> None:
    scorer = (SCORES if kind == "transferability" else SELECTION_SCORES).get(name)
    value = scorer(score_inputs())
    assert isinstance(value, float) and math.isfinite(value), value
    assert scorer(score_inputs()) == value  # the same inputs, the same number
    assert scorer.mode in ("max", "min")
