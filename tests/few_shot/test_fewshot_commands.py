"""fewshot-eval and fewshot from the CLI and the API on tiny class folders, with a real small backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cvtransfer
from tests.conftest import tiny_config, write_class_images, write_split_folders
from tests.test_bad_inputs import run_cli

BASE = ["--backbone", "tf_efficientnet_lite0", "--weights", "imagenet", "--image-size", "32", "--num-workers", "0",
        "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def classes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fewshot") / "data"
    write_class_images(root, {"red": 8, "green": 8, "blue": 8}, size=24)
    return root


def test_fewshot_eval_measures_every_method_on_the_same_episodes(classes_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    code, lines = run_cli(["fewshot-eval", str(classes_dir), *BASE, "--ways", "3", "--shots", "1,3", "--queries",
                           "4", "--episodes", "30", "--out", str(out)])
    assert code == 0, lines
    saved = json.loads((out / "fewshot.json").read_text())
    rows = saved["results"]
    methods = cvtransfer.Config().fewshot_methods.split(",")
    assert [(row["method"], row["shots"]) for row in rows] == [(m, s) for s in (1, 3) for m in methods]
    assert all(0.0 <= row["accuracy"] <= 1.0 and row["ci95"] > 0 and row["episodes"] == 30 for row in rows)
    accuracy = {(row["method"], row["shots"]): row["accuracy"] for row in rows}
    # the class is the colour of a centre square: the packaged ImageNet Lite0 features tell it apart
    assert accuracy[("protonet", 3)] > 0.6  # chance: 1/3
    assert (out / "fewshot.csv").read_text().splitlines()[0].startswith("method,ways,shots,queries,episodes,accuracy")
    # the report breaks the first method at the most shots down by class: 30 episodes x 3 classes x 4 queries
    detail = saved["detail"]
    assert (detail["method"], detail["shots"]) == ("protonet", 3) and sum(map(sum, detail["confusion"])) == 360
    per_class = {row["class"]: row for row in detail["per_class"]}
    assert sum(row["queries"] for row in per_class.values()) == 360
    hits = sum(row["accuracy"] * row["queries"] for row in per_class.values())
    assert hits / 360 == pytest.approx(accuracy[("protonet", 3)])
    page = (out / "report.html").read_text()
    assert all(f'id="{section}"' in page for section in ("summary", "per-class", "confusion", "errors"))
    assert (out / "confusion.png").is_file() and (out / "errors.png").is_file() == (accuracy[("protonet", 3)] < 1)
    again = cvtransfer.fewshot_eval(data=str(classes_dir), backbone="tf_efficientnet_lite0", weights="imagenet", image_size=32,
                                    num_workers=0, accelerator="cpu", ways=3, shots="1,3", queries=4, episodes=30,
                                    out=str(tmp_path / "api"))
    assert [row["accuracy"] for row in again.rows] == [row["accuracy"] for row in rows]  # seeded episodes


def test_classes_file_restricts_the_evaluation(classes_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "held_out.txt").write_text("green\nblue\n")
    result = cvtransfer.fewshot_eval(data=str(classes_dir), backbone="tf_efficientnet_lite0", weights="imagenet", image_size=32,
                                     num_workers=0, ways=2, shots="2", queries=3, episodes=5,
                                     classes_file=str(tmp_path / "held_out.txt"), fewshot_methods="protonet",
                                     out=str(tmp_path / "eval"))
    assert result.classes == ["green", "blue"] and len(result.rows) == 1
    assert json.loads((tmp_path / "eval" / "fewshot.json").read_text())["images"] == 16


@pytest.mark.parametrize(("extra", "expected"), [
    (["--shots", "2", "--queries", "7"], "class(es) 'blue' (8), 'green' (8), 'red' (8) have fewer than --shots + --queries"),
    (["--ways", "4", "--shots", "1", "--queries", "2"], "--ways 4 needs 4 classes but the data has 3"),
    (["--shots", "one"], "--shots 'one' is not a list of positive numbers"),
    (["--fewshot-methods", "protonet,protonets"], "few-shot method 'protonets'"),
    (["--classes-file", "missing.txt"], "--classes-file missing.txt does not exist"),
    (["--out", "RUN"], "is a run folder: give fewshot-eval a folder of its own"),
])
def test_refusals_are_one_line_and_write_nothing(extra: list[str], expected: str, classes_dir: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "eval"
    if "RUN" in extra:  # a training run's folder is never written into
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "config.yaml").write_text("backbone: resnet18\n")
        extra = [str(tmp_path / "run") if value == "RUN" else value for value in extra]
        out = tmp_path / "run" / "fewshot.json"
    code, lines = run_cli(["fewshot-eval", str(classes_dir), *BASE, "--out", str(out), *extra])
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not out.exists()


def test_classes_the_weights_were_trained_on_are_refused(classes_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "base"
    write_class_images(data, {"red": 6, "cyan": 6}, size=16)
    run = cvtransfer.fit(tiny_config(data, tmp_path / "run", epochs=1, val_split=0.3)).path
    code, lines = run_cli(["fewshot-eval", str(classes_dir), "--backbone", "tinycnn", "--weights", str(run),
                           "--image-size", "16", "--ways", "2", "--shots", "1", "--queries", "1", "--episodes", "2",
                           "--out", str(tmp_path / "eval")])
    assert code == 2 and "evaluation class(es) red were training classes of" in lines[0], lines
    (tmp_path / "held_out.txt").write_text("green\nblue\n")
    code, lines = run_cli(["fewshot-eval", str(classes_dir), "--backbone", "tinycnn", "--weights", str(run),
                           "--image-size", "16", "--ways", "2", "--shots", "1", "--queries", "1", "--episodes", "2",
                           "--classes-file", str(tmp_path / "held_out.txt"), "--out", str(tmp_path / "eval")])
    assert code == 0, lines


def test_fewshot_labels_query_images_from_a_support_set(tmp_path: Path) -> None:
    root = write_split_folders(tmp_path / "data", train=3, val=0, test=4, classes="abc", size=24)
    out = tmp_path / "predictions.csv"
    code, lines = run_cli(["fewshot", "--support", str(root / "train"), "--query", str(root / "test"), *BASE,
                           "--fewshot-methods", "simpleshot", "--out", str(out)])
    assert code == 0, lines
    rows = out.read_text().splitlines()
    assert rows[0] == "path,label,score" and len(rows) == 1 + 12
    predicted = cvtransfer.fewshot(root / "train", root / "test", backbone="tf_efficientnet_lite0", weights="imagenet",
                                   image_size=32, num_workers=0, fewshot_methods="simpleshot")
    truth = [Path(row["path"]).parent.name for row in predicted]
    assert sum(row["label"] == label for row, label in zip(predicted, truth)) >= 8  # of 12; chance: 4
    assert all(0.0 < row["score"] <= 1.0 for row in predicted)


def test_base_and_novel_class_folders_are_pooled_and_one_episode_has_no_interval(tmp_path: Path) -> None:
    write_class_images(tmp_path / "data" / "train", {"red": 4, "green": 4}, size=24)  # base classes
    write_class_images(tmp_path / "data" / "test", {"blue": 4}, size=24)  # a novel class, as few-shot data are laid out
    result = cvtransfer.fewshot_eval(data=str(tmp_path / "data"), backbone="tf_efficientnet_lite0", weights="imagenet",
                                     image_size=32, num_workers=0, ways=3, shots="1", queries=2, episodes=1,
                                     fewshot_methods="protonet", out=str(tmp_path / "eval"))
    assert sorted(result.classes) == ["blue", "green", "red"] and result.rows[0]["ci95"] is None
    saved = json.loads((tmp_path / "eval" / "fewshot.json").read_text())  # valid JSON: null, not NaN
    assert saved["images"] == 12 and saved["results"][0]["ci95"] is None
