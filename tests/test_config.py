"""One Config for CLI, YAML and Python: validation, coercion, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvtransfer.config import Config, from_dict
from cvtransfer.errors import ConfigError


def test_defaults_are_valid_and_round_trip_through_yaml(tmp_path: Path) -> None:
    config = Config(data="d", backbone="resnet50", strategy="gradual", precision="bf16")
    config.save(tmp_path / "c.yaml")
    assert Config.load(tmp_path / "c.yaml") == config


def test_yaml_scalars_are_coerced(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("precision: 16\nlr: 1\nepochs: 3\n")
    config = Config.load(tmp_path / "c.yaml")
    assert config.precision == "16" and config.lr == 1.0 and isinstance(config.lr, float)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"augment": "medium"}, "--augment must be one of none, light, strong"),
        ({"epochs": 0}, "--epochs must be >= 1"),
        ({"val_split": 1.5}, "--val-split must be between 0.0 and 0.9"),
        ({"lr": "fast"}, "--lr must be a float"),
        ({"balanced_sampler": "yes"}, "--balanced-sampler must be a bool"),
        ({"strategy": "bogus"}, "unknown strategy 'bogus'"),
        ({"method": "dan2"}, "unknown adaptation method 'dan2': did you mean dan"),
        ({"rank_by": "accuracy"}, "unknown transferability score 'accuracy'"),
    ],
)
def test_bad_values_name_the_option(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(values)


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("learning_rate: 0.1\nbackbon: resnet18\n")
    with pytest.raises(ConfigError, match=r"unknown option in .*c\.yaml 'learning_rate'"):
        Config.load(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="did you mean backbone"):
        from_dict({"backbon": "x"})


def test_replace_validates() -> None:
    assert Config().replace(lr=0.1).lr == 0.1
    with pytest.raises(ConfigError):
        Config().replace(batch_size=0)


def test_broken_yaml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        Config.load(tmp_path / "c.yaml")
    assert "\n" not in str(info.value)


def test_bad_strategy_is_refused_by_the_python_api_before_any_run() -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'bogus'"):
        Config(strategy="bogus")
