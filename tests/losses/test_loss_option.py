"""--loss NAME[:WEIGHT]: loss terms added to the task loss, from the CLI, YAML and the Python API."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import cvtransfer
from cvtransfer import Config
from cvtransfer.errors import ConfigError
from cvtransfer.losses import parse_loss_spec
from tests.conftest import tiny_config
from tests.losses.conftest import adapt_config


def history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_a_list_is_joined_in_every_entry_point(tmp_path: Path) -> None:
    assert Config(loss=["l2sp", "mcc:0.1"]).loss == "l2sp,mcc:0.1"
    assert Config().replace(loss=("l2sp",)).loss == "l2sp"
    (tmp_path / "c.yaml").write_text("loss: [l2sp, 'mcc:0.1']\n")
    assert Config.load(tmp_path / "c.yaml").loss == "l2sp,mcc:0.1"
    assert parse_loss_spec("dann, mcc:0.1") == [("dann", 1.0), ("mcc", 0.1)]


@pytest.mark.parametrize(("spec", "message"), [
    ("mcc:abc", "the weight after ':' must be a number"),
    ("l2sp:nan", "finite number >= 0"),
    ("l2sp:inf", "finite number >= 0"),
    ("l2sp:-1", "finite number >= 0"),
    ("l2pp", "unknown loss term 'l2pp'"),
])
def test_bad_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(loss=spec)


@pytest.mark.parametrize(("options", "message"), [
    ({"loss": "dann"}, "compares source and target images: use cvtransfer adapt"),
    ({"strategy": "l2sp", "loss": "l2sp"}, "--strategy l2sp already adds it"),
    ({"loss": "l2sp,l2sp:0.5"}, "it is given twice"),
    ({"strategy": "linear", "head": "logistic", "loss": "l2sp"}, "does not apply to a solved head"),
])
def test_fit_refuses_terms_it_cannot_honour_before_making_a_folder(split_dir: Path, tmp_path: Path,
                                                                    options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cvtransfer.fit(tiny_config(split_dir, tmp_path / "run", **options))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("options", "message"), [
    ({"method": "dann", "loss": "dann"}, "already the --method"),
    ({"method": "dann", "mcc": 0.5, "loss": "mcc"}, "--mcc and --loss mcc add the same term"),
    ({"method": "dann", "loss": "adda"}, "use it as the method, --method adda"),
])
def test_adapt_refuses_terms_it_cannot_honour(domains: tuple[Path, Path], tmp_path: Path, options: dict,
                                              message: str) -> None:
    source, target = domains
    with pytest.raises(ConfigError, match=message):
        cvtransfer.adapt(adapt_config(source, target, tmp_path / "run", **options))
    assert not (tmp_path / "run").exists()


def test_auto_refuses_loss(split_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="auto chooses the strategy and the loss terms"):
        cvtransfer.auto(tiny_config(split_dir, tmp_path / "auto", loss="l2sp"))


def test_fit_adds_l2sp_to_full_fine_tuning(split_dir: Path, tmp_path: Path) -> None:
    plain = cvtransfer.fit(tiny_config(split_dir, tmp_path / "plain", epochs=1))
    added = cvtransfer.fit(tiny_config(split_dir, tmp_path / "added", epochs=1, loss=["l2sp:2"], l2sp_beta=0.5))
    rows = history(added.path)
    assert float(rows[0]["train_penalty"]) > 0 and "train_penalty" not in history(plain.path)[0]
    # the penalty is in the training loss: same seed, same batches, higher loss
    assert float(rows[0]["train_loss"]) > float(history(plain.path)[0]["train_loss"])


def test_adapt_combines_a_method_and_added_terms(domains: tuple[Path, Path], tmp_path: Path) -> None:
    source, target = domains
    run = cvtransfer.adapt(adapt_config(source, target, tmp_path / "run", epochs=1, method="dann",
                                        loss="mcc:0.1,coral:0.5"))
    row = history(run.path)[0]
    for column in ("train_transfer_loss", "train_mcc_loss", "train_coral_loss", "train_domain_accuracy"):
        assert column in row and row[column] not in ("", "nan"), column
    assert run.config.loss == "mcc:0.1,coral:0.5"


def test_the_cli_joins_repeated_options(split_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    from tests.test_cli import run_cli

    out = tmp_path / "run"
    code, _, err = run_cli(["fit", str(split_dir), "--out", str(out), "--loss", "l2sp", "--loss", "l2sp:0.5"],
                           monkeypatch, capsys)
    assert code == 2 and "--loss l2sp: it is given twice" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
