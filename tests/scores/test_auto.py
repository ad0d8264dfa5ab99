"""``auto``: rank, the strategy rules, the from-scratch baseline and the negative-transfer verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cvtransfer
from cvtransfer.errors import ConfigError, WeightsError
from cvtransfer.workflows.auto import (
    DataFacts,
    Relatedness,
    _backbone_decision,
    choose_strategy,
    transfer_candidate,
)
from cvtransfer.workflows.rank import Candidate, CandidateScores, Ranking
from tests.conftest import tiny_config
from tests.scores.conftest import IMAGE_SIZE, weights_pairs
from tests.test_cli import run_cli


def test_auto_cli_end_to_end_writes_decisions_with_the_verdict(
        split_dir: Path, tmp_path: Path, candidate_weights: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "auto"
    code, printed, err = run_cli(
        ["auto", str(split_dir), "--budget", "fast", "--backbones", "tinycnn,lenet", "--weights",
         weights_pairs(candidate_weights), "--out", str(out), "--image-size", str(IMAGE_SIZE), "--epochs", "2",
         "--batch-size", "8", "--accelerator", "cpu", "--num-workers", "0", "--no-progress", "--augment", "none"],
        monkeypatch, capsys)
    assert code == 0, err
    summary = json.loads((out / "auto.json").read_text())
    decisions = (out / "decisions.md").read_text()
    for step in ("candidates", "backbone", "data size", "relatedness", "strategy", "negative transfer",
                 "recommended model"):
        assert f"| {step} |" in decisions and f"{step}: " in printed
    val = summary["val_accuracy"]
    assert summary["negative_transfer"] == (val["transfer"] <= val["scratch"])
    verdict = "yes" if summary["negative_transfer"] else "no"
    assert f"| negative transfer | {verdict} |" in decisions
    assert (("NEGATIVE TRANSFER" in err) == summary["negative_transfer"])
    assert val[summary["recommended"]] == max(val.values())
    # the chosen backbone is the ranking's best, and every sub-run is an ordinary run folder
    ranking = (out / "ranking.csv").read_text().splitlines()
    assert ranking[1].split(",")[1] == summary["candidate"]["name"]
    for name in ("transfer", "scratch", "probe"):
        assert (out / name / "model.safetensors").exists() and (out / name / "metrics.json").exists()
    scratch_config = (out / "scratch" / "config.yaml").read_text()
    assert "weights: none" in scratch_config and "epochs: 1" in scratch_config  # same budget: fast = 0.5 x 2
    assert f"strategy: {summary['strategy']}" in (out / "transfer" / "config.yaml").read_text()


def facts(images: int, classes: int) -> DataFacts:
    return DataFacts(images, classes, images / classes, images // classes)


def related(probe: float, scratch: float, score: float = 1.0, random_score: float = 0.0) -> Relatedness:
    return Relatedness(probe, scratch, "logme", score, random_score)


@pytest.mark.parametrize(("data", "relation", "strategy"), [
    (facts(50, 10), related(0.8, 0.5), "linear"),  # 5 per class: tiny, similar
    (facts(50, 10), related(0.4, 0.5), "l2sp"),  # tiny, dissimilar
    (facts(500, 10), related(0.8, 0.5), "linear"),  # 50 per class: small, similar
    (facts(500, 10), related(0.4, 0.5), "gradual"),  # small, dissimilar
    (facts(5000, 10), related(0.8, 0.5), "gradual"),  # large, similar
    (facts(5000, 10), related(0.4, 0.5), "full"),  # large, dissimilar
    (facts(5000, 10), related(0.5, 0.5, score=-1.0), "full"),  # a tie is broken by the score vs random init
    (facts(5000, 10), related(0.5, 0.5, score=2.0), "gradual"),
])
def test_strategy_rules(data: DataFacts, relation: Relatedness, strategy: str) -> None:
    config = cvtransfer.Config()
    decision = choose_strategy(data, relation, config)
    assert decision.choice == strategy and decision.reason


def test_auto_offline_default_candidates_say_what_to_do(split_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise WeightsError("cannot download ImageNet weights for 'resnet18': huggingface.co is unreachable")

    monkeypatch.setattr("cvtransfer.workflows.rank.build_model", offline)
    with pytest.raises(WeightsError, match=r"'fast' budget ranks resnet18,.*--weights A=PATH"):
        cvtransfer.auto(tiny_config(split_dir, tmp_path / "auto", weights="imagenet", budget="fast"))


def test_equal_scores_are_a_tie_not_similar() -> None:
    relation = related(0.5, 0.5, score=-0.7782, random_score=-0.7782)
    assert not relation.similar and relation.tied
    assert "a tie" in relation.describe()


def _row(name: str, weights: str, score: float) -> CandidateScores:
    return CandidateScores(Candidate(name, name.split("@")[0], weights), {"logme": score}, 0.0, 0.0)


def test_random_init_candidates_are_baselines_never_the_transfer(tmp_path: Path) -> None:
    ranking = Ranking([_row("tinycnn@none", "none", 0.9), _row("lenet", "a.pth", 0.3), _row("tinycnn", "b.pth", 0.1)],
                      "logme", tmp_path)
    chosen = transfer_candidate(ranking)
    assert chosen.candidate.name == "lenet"
    decision = _backbone_decision(ranking, chosen)
    assert decision.choice == "lenet"
    assert "of 2 pretrained candidates" in decision.reason and "tinycnn@none (0.9)" in decision.reason


def test_auto_refuses_candidates_that_are_all_random_init(split_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="every candidate has --weights none"):
        cvtransfer.auto(tiny_config(split_dir, tmp_path / "auto", backbones="tinycnn,lenet", weights="none"))
    assert not (tmp_path / "auto").exists()
