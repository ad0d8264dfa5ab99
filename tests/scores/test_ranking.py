"""``rank``: candidates, scores from cached features, ranking.csv, --validate, and its errors (CLI and API)."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import pytest

import cvtransfer
from cvtransfer.errors import ConfigError, CvTransferError
from cvtransfer.workflows.rank import Candidate, CandidateScores, parse_candidates, rank_correlations
from tests.conftest import tiny_config
from tests.scores.conftest import IMAGE_SIZE, weights_pairs
from tests.test_cli import run_cli

CLI_OPTIONS = ["--image-size", str(IMAGE_SIZE), "--accelerator", "cpu", "--num-workers", "0", "--no-progress",
               "--batch-size", "8"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_rank_api_scores_every_candidate_and_feeds_the_cache(split_dir: Path, tmp_path: Path,
                                                             candidate_weights: dict[str, Path],
                                                             isolated_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tiny_config(split_dir, tmp_path / "rank", image_size=IMAGE_SIZE, backbones="tinycnn,lenet",
                         weights=weights_pairs(candidate_weights))
    ranking = cvtransfer.rank(config)
    rows = read_csv(tmp_path / "rank" / "ranking.csv")
    assert [row["candidate"] for row in rows] == [row.candidate.name for row in ranking.rows]
    assert sorted(row["backbone"] for row in rows) == ["lenet", "tinycnn"]
    assert list(rows[0])[:9] == ["rank", "candidate", "backbone", "weights", "logme", "leep", "nce", "hscore", "nleep"]
    logmes = [float(row["logme"]) for row in rows]
    assert logmes == sorted(logmes, reverse=True)  # best first
    by_name = {row.candidate.backbone: row for row in ranking.rows}
    # tinycnn's file has a 5-class head: LEEP/NCE computed; lenet's has none: not available, not made up
    assert all(math.isfinite(by_name["tinycnn"].scores[name]) for name in ("leep", "nce"))
    assert by_name["tinycnn"].scores["leep"] <= 0
    assert all(math.isnan(by_name["lenet"].scores[name]) for name in ("leep", "nce"))
    assert any("holds no classifier" in note for note in by_name["lenet"].notes)
    assert any("5 source classes" in note for note in by_name["tinycnn"].notes)
    assert all(float(row["feature_seconds"]) >= 0 for row in rows)

    # a later linear fit of the same backbone reuses the training features rank cached: only val's are new
    cached = set((isolated_cache / "features").iterdir())
    assert len(cached) == 2
    with caplog.at_level(logging.INFO, logger="cvtransfer"):
        cvtransfer.fit(config.replace(backbone="tinycnn", weights=str(candidate_weights["tinycnn"]), strategy="linear",
                                      head="logistic", backbones=None, out=str(tmp_path / "linear")))
    assert len(set((isolated_cache / "features").iterdir()) - cached) == 1
    assert "features: 30 cached in" in caplog.text


def test_rank_cli_validate_prints_the_table_and_rank_correlations(
        split_dir: Path, tmp_path: Path, candidate_weights: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "ranked"
    code, printed, _ = run_cli(["rank", str(split_dir), "--backbones", "tinycnn,lenet", "--weights",
                                weights_pairs(candidate_weights), "--out", str(out), "--validate", *CLI_OPTIONS],
                               monkeypatch, capsys)
    assert code == 0
    assert "candidate" in printed and "logme" in printed and "probe acc" in printed
    assert "kendall tau" in printed and "weighted tau" in printed
    assert "lenet: leep, nce: not available" in printed
    rows = read_csv(out / "ranking.csv")
    for row in rows:
        accuracy = float(row["probe_accuracy"])
        assert 0.0 <= accuracy <= 1.0
        assert (out / "probes" / row["candidate"] / "model.safetensors").exists()


def test_rank_correlations_of_known_orders() -> None:
    def row(name: str, score: float, accuracy: float) -> CandidateScores:
        scores = {n: score for n in ("logme", "hscore", "nleep")} | {"leep": -score, "nce": math.nan}
        return CandidateScores(Candidate(name, name, "none"), scores, 0.0, 0.0, probe_accuracy=accuracy)

    rows = [row("a", 1.0, 0.5), row("b", 2.0, 0.6), row("c", 3.0, 0.9), row("d", 4.0, 0.95)]
    result = rank_correlations(rows)
    assert result["logme"]["kendall_tau"] == pytest.approx(1.0)
    assert result["logme"]["weighted_tau"] == pytest.approx(1.0)
    assert result["leep"]["kendall_tau"] == pytest.approx(-1.0)
    assert math.isnan(result["nce"]["kendall_tau"]) and result["nce"]["candidates"] == 0
    swapped = rank_correlations([row("a", 2.0, 0.5), row("b", 1.0, 0.6), row("c", 3.0, 0.9), row("d", 4.0, 0.95)])
    assert swapped["logme"]["kendall_tau"] == pytest.approx(2 / 3)  # one discordant pair of six


def test_parse_candidates_forms() -> None:
    one = parse_candidates("resnet18, resnet50", "imagenet")
    assert [(c.name, c.backbone, c.weights) for c in one] == [("resnet18", "resnet18", "imagenet"),
                                                              ("resnet50", "resnet50", "imagenet")]
    paired = parse_candidates("tinycnn,tinycnn", "tinycnn=a/model.safetensors,tinycnn=b/model.safetensors")
    assert [c.name for c in paired] == ["tinycnn@a", "tinycnn@b"]
    assert [c.backbone for c in parse_candidates(None, "lenet=x.pth,tinycnn=none")] == ["lenet", "tinycnn"]
    assert parse_candidates(["lenet", "tinycnn"], "x.pth,none")[1].weights == "none"


@pytest.mark.parametrize(("backbones", "weights", "message"), [
    ("tinycnn,lenet", "tinycnn=a.pth,lenet", "not NAME=PATH"),
    ("tinycnn", "lenet=a.pth", "no pair tinycnn=PATH"),
    ("tinycnn", "tinycnn=a.pth,lenet=b.pth", "matches no backbone"),
    ("tinycnn,lenet,tinycnn", "a.pth,b.pth", "2 values for 3 backbones"),
    (None, "imagenet", "no candidate backbones"),
])
def test_parse_candidates_errors(backbones: str | None, weights: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_candidates(backbones, weights)


@pytest.mark.parametrize(("options", "message"), [
    (["--backbones", "tinycnn,resnet_doesnotexist", "--weights", "none"], "resnet_doesnotexist"),
    (["--backbones", "tinycnn,lenet", "--weights", "tinycnn=a.pth,lenet"], "not NAME=PATH"),
    (["--backbones", "tinycnn", "--weights", "missing/file.safetensors"], "missing/file.safetensors"),
    (["--backbones", "tinycnn", "--weights", "none", "--rank-by", "logmee"], "logme"),
])
def test_rank_cli_errors_are_one_line(split_dir: Path, tmp_path: Path, options: list[str], message: str,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(["rank", str(split_dir), "--out", str(tmp_path / "r"), *options, *CLI_OPTIONS],
                           monkeypatch, capsys)
    assert code == 2
    assert "Traceback" not in err
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and message in error[0], err


def test_rank_api_raises_the_library_error(split_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CvTransferError, match="no candidate backbones"):
        cvtransfer.rank(tiny_config(split_dir, tmp_path / "r"))
