"""Every registered strategy: frozen parameters and BatchNorm statistics stay bit-identical, the rest trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cvtransfer.data.folders import discover
from cvtransfer.engine.runner import train
from cvtransfer.strategies.gradual import frozen_groups_at
from tests.conftest import tiny_config

# Per strategy: options, and the layer groups that must end the run untouched.
CASES = {
    "linear": ({}, {0, 1, 2, 3}),
    "partial": ({"freeze": 2}, {0, 1}),
    "full": ({}, set()),
    "gradual": ({"freeze_epochs": 1}, set()),
    "l2sp": ({}, set()),
    "bitfit": ({}, set()),  # every group's biases train (tests/strategies/test_bitfit.py: only they do)
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_strategy_contract(name: str, split_dir: Path, tmp_path: Path, start_weights: Path) -> None:
    options, untouched = CASES[name]
    config = tiny_config(split_dir, tmp_path / "run", strategy=name, weights=str(start_weights), **options)
    (tmp_path / "run").mkdir()
    start = load_file(start_weights)
    setup = train(config, tmp_path / "run", discover(split_dir))
    model = setup.built.model
    final = model.backbone.state_dict()
    for group, names in enumerate(model.layer_groups):
        prefixes = {n.rsplit(".", 1)[0] for n in names}
        keys = [k for k in final if k.rsplit(".", 1)[0] in prefixes and not k.endswith("num_batches_tracked")]
        same = all(torch.equal(final[k], start[k]) for k in keys)
        assert same == (group in untouched), f"{name}: group {group} {'changed' if group in untouched else 'did not train'}"
    assert not torch.equal(model.head.weight, torch.zeros_like(model.head.weight))


def test_gradual_thaws_from_the_top() -> None:
    assert list(frozen_groups_at(0, 4, freeze_epochs=1, unfreeze_every=0)) == [0, 1, 2, 3]
    assert list(frozen_groups_at(1, 4, freeze_epochs=1, unfreeze_every=0)) == []
    assert [len(frozen_groups_at(e, 4, 1, 2)) for e in range(8)] == [4, 3, 3, 2, 2, 1, 1, 0]


def test_gradual_head_only_phase_leaves_backbone_and_bn_untouched(
    split_dir: Path, tmp_path: Path, start_weights: Path
) -> None:
    config = tiny_config(split_dir, tmp_path / "run", strategy="gradual", weights=str(start_weights),
                         freeze_epochs=2, epochs=2)
    (tmp_path / "run").mkdir()
    setup = train(config, tmp_path / "run", discover(split_dir))
    start = load_file(start_weights)
    final = setup.built.model.backbone.state_dict()
    assert all(torch.equal(final[k], start[k]) for k in start if not k.endswith("num_batches_tracked"))
