"""Class weighting for imbalanced data."""

from __future__ import annotations

import pytest
import torch

from cvtransfer.data.loaders import class_loss_weights, class_sample_weights, make_loader


def test_loss_weights_are_inverse_frequency() -> None:
    weights = class_loss_weights([0] * 6 + [1] * 2, num_classes=2)
    assert weights.tolist() == pytest.approx([8 / (2 * 6), 8 / (2 * 2)])


def test_balanced_sampler_draws_classes_equally_often() -> None:
    labels = [0] * 90 + [1] * 10
    dataset = torch.utils.data.TensorDataset(torch.zeros(100), torch.tensor(labels))
    loader = make_loader(dataset, 100, train=True, labels=labels, num_classes=2, balanced=True)
    drawn = torch.cat([torch.cat([y for _, y in loader]) for _ in range(20)])
    assert abs(drawn.float().mean().item() - 0.5) < 0.05
    assert class_sample_weights(labels, 2)[-1] == 0.1


def test_drop_last_is_decided_on_each_ranks_share() -> None:
    from cvtransfer.data.loaders import batches_per_rank, drop_last_for

    # 48 images, batch 32: one process drops the last 16; two processes get 24 each, which must train.
    assert drop_last_for(48, 32, world_size=1) and batches_per_rank(48, 32, 1) == 1
    assert not drop_last_for(48, 32, world_size=2) and batches_per_rank(48, 32, 2) == 1
    assert drop_last_for(200, 32, world_size=2) and batches_per_rank(200, 32, 2) == 3
    assert batches_per_rank(60, 32, 2, drop_last=True) == 0  # what a global decision gave: no step at all


def test_training_without_an_optimizer_step_is_refused() -> None:
    from cvtransfer.data.loaders import check_training_batches
    from cvtransfer.errors import ConfigError

    check_training_batches(60, 32, world_size=2)  # per-rank drop_last: one batch of 30 each
    message = (r"^60 training images over 2 processes and --batch-size 32 give no full batch: lower "
               r"--batch-size or use fewer --devices$")
    with pytest.raises(ConfigError, match=message):
        check_training_batches(60, 32, world_size=2, drop_last=True)
    with pytest.raises(ConfigError, match="^0 training images and --batch-size 8"):
        check_training_batches(0, 8)


def test_training_loader_is_remade_for_the_world_size() -> None:
    from cvtransfer.data.loaders import for_world_size

    dataset = torch.utils.data.TensorDataset(torch.zeros(48), torch.zeros(48, dtype=torch.long))
    loader = make_loader(dataset, 32, train=True)
    assert loader.drop_last and len(loader) == 1
    ranked = for_world_size(loader, world_size=2)
    assert not ranked.drop_last and isinstance(ranked.sampler, torch.utils.data.RandomSampler)
    assert for_world_size(loader, world_size=1) is loader
    assert make_loader(dataset, 32, train=True, world_size=2).drop_last is False
