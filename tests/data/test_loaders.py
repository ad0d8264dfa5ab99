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
