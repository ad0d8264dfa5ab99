"""Unsupervised selection scores and the domain-shift measures on small arrays."""

from __future__ import annotations

import pytest
import torch

from cvtransfer.scores.selection import (
    SELECTION_SCORES,
    deep_embedded_validation,
    prediction_entropy,
    soft_neighborhood_density,
)
from cvtransfer.scores.shift import domain_shift, median_heuristic, mmd, proxy_a_distance, wasserstein


def gaussian(n: int, d: int, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def test_entropy_is_zero_for_one_hot_and_log_c_for_uniform() -> None:
    assert prediction_entropy(torch.eye(4)) == pytest.approx(0.0, abs=1e-9)
    assert prediction_entropy(torch.full((5, 4), 0.25)) == pytest.approx(float(torch.log(torch.tensor(4.0))))
    assert SELECTION_SCORES.get("entropy").mode == "min" and SELECTION_SCORES.get("snd").mode == "max"


def test_snd_is_higher_for_clustered_predictions_than_for_scattered_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    # 3 tight clusters of confident predictions vs predictions spread at random over the simplex
    clustered = torch.eye(3).repeat_interleave(20, dim=0) * 0.9 + 0.1 / 3
    scattered = torch.distributions.Dirichlet(torch.ones(3)).sample((60,))
    del generator
    assert soft_neighborhood_density(clustered) > soft_neighborhood_density(scattered)
    # chunking does not change the value
    assert soft_neighborhood_density(scattered, chunk=7) == pytest.approx(soft_neighborhood_density(scattered))


def test_dev_is_the_plain_validation_loss_when_the_domains_match() -> None:
    source, target = gaussian(300, 4), gaussian(300, 4, seed=1)
    losses = torch.rand(300, generator=torch.Generator().manual_seed(2))
    value = deep_embedded_validation(source, losses, target)
    assert value == pytest.approx(float(losses.mean()), abs=0.05)
    # when the target looks like the high-loss part of the source, DEV weights those losses up
    shifted = gaussian(300, 4, shift=1.0, seed=3)
    losses_by_position = (source[:, 0] > 0.5).float()
    assert deep_embedded_validation(source, losses_by_position, shifted) > float(losses_by_position.mean()) + 0.1


def test_mmd_median_heuristic_and_growth() -> None:
    x = gaussian(200, 5)
    assert abs(mmd(x, gaussian(200, 5, seed=1))) < 0.02
    assert mmd(x, gaussian(200, 5, shift=1.0, seed=1)) > 0.2
    # the bandwidth follows the data's scale, so MMD is unchanged when both domains are scaled
    y = gaussian(200, 5, shift=0.5, seed=1)
    assert mmd(10 * x, 10 * y) == pytest.approx(mmd(x, y), rel=1e-6)
    assert median_heuristic(10 * x, 10 * y) == pytest.approx(100 * median_heuristic(x, y), rel=1e-6)


def test_proxy_a_distance_is_near_zero_for_the_same_domain_and_two_when_separable() -> None:
    x = gaussian(400, 3)
    assert proxy_a_distance(x, gaussian(400, 3, seed=1)) < 0.3
    assert proxy_a_distance(x, gaussian(400, 3, shift=10.0, seed=1)) == pytest.approx(2.0)


def test_wasserstein_of_a_translation_is_its_length() -> None:
    x = gaussian(100, 2)
    assert wasserstein(x, x + torch.tensor([3.0, 4.0])) == pytest.approx(5.0, rel=1e-6)
    result = domain_shift(x, x + 1.0, max_samples=50)
    assert set(result) >= {"mmd2", "proxy_a_distance", "wasserstein"} and result["source_samples"] == 50
    with pytest.raises(ValueError, match="at least 4"):
        domain_shift(x[:2], x[:2])
