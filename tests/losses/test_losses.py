"""Each method's loss on small tensors: the properties its paper states."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from cvtransfer import Config
from cvtransfer.errors import ConfigError
from cvtransfer.losses import LOSSES, adaptation_methods, build_loss_terms
from cvtransfer.losses.adda import AdversarialDiscriminativeLoss
from cvtransfer.losses.cdan import CDAN, CDANE, MultilinearMap, RandomizedMultilinearMap
from cvtransfer.losses.coral import coral, covariance
from cvtransfer.losses.dan import MultipleKernelMaximumMeanDiscrepancy, gaussian_mmd2
from cvtransfer.losses.dann import DomainAdversarialLoss, domain_loss_and_accuracy
from cvtransfer.losses.grl import reverse_gradient, warm_start
from cvtransfer.losses.mcc import class_confusion
from cvtransfer.models.transfer_model import TransferModel

torch.manual_seed(0)


def batch(n: int = 32, d: int = 8, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def test_mmd_of_identical_batches_is_zero_and_grows_with_the_shift() -> None:
    x = batch()
    loss = MultipleKernelMaximumMeanDiscrepancy()
    assert float(loss.compare(x, x.clone(), None, None, 0.0)[0]) == pytest.approx(0.0, abs=1e-6)
    values = [float(loss.compare(x, batch(seed=1, shift=s), None, None, 0.0)[0]) for s in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > 10 * values[0] > 0


def test_unbiased_mmd_matches_the_formula_by_hand() -> None:
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0]])
    k = lambda a, b: math.exp(-((a - b) ** 2) / 2)  # noqa: E731 - sigma^2 = 1
    expected = 2 * k(0, 1) / 2 + 0.0 - 2 * (k(0, 3) + k(1, 3)) / 2  # within-x off-diagonal mean, no within-y pairs
    assert float(gaussian_mmd2(x, y, [1.0], unbiased=True)) == pytest.approx(expected, rel=1e-6)


def test_coral_is_zero_for_equal_covariances_and_matches_the_formula() -> None:
    x = batch(d=4)
    assert float(coral(x, x + 5.0)) == pytest.approx(0.0, abs=1e-10)  # a mean shift has equal covariance
    y = batch(d=4, seed=2) * torch.tensor([1.0, 2.0, 3.0, 0.5])
    expected = ((covariance(x) - covariance(y)) ** 2).sum() / (4 * 16)
    assert float(coral(x, y)) == pytest.approx(float(expected)) and float(coral(x, y)) > 0.1
    assert torch.allclose(covariance(x), torch.cov(x.T), atol=1e-6)


def test_gradient_reversal_flips_and_scales() -> None:
    x = torch.ones(3, requires_grad=True)
    (reverse_gradient(x, 0.3) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.3, -0.6, -0.9]))
    assert warm_start(0.0) == 0.0 and warm_start(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert warm_start(0.1) < warm_start(0.5) < 1.0


def test_dann_trains_the_discriminator_and_reverses_the_features_gradient() -> None:
    loss = DomainAdversarialLoss(8, hidden=16)
    source, target = batch(shift=2.0).requires_grad_(), batch(seed=1).requires_grad_()
    value, metrics = loss.compare(source, target, None, None, 1.0)
    value.backward()
    assert 0.0 <= float(metrics["domain_accuracy"]) <= 1.0
    # the features' gradient is the negative of what minimising the discriminator loss would ask for
    plain = DomainAdversarialLoss(8, hidden=16)
    plain.load_state_dict(loss.state_dict())
    s2, t2 = source.detach().clone().requires_grad_(), target.detach().clone().requires_grad_()
    from cvtransfer.losses.dann import domain_loss_and_accuracy as bce

    bce(plain.discriminator(torch.cat([s2, t2])), len(s2))[0].backward()
    coefficient = warm_start(1.0)
    assert torch.allclose(source.grad, -coefficient * s2.grad, atol=1e-6)


def test_domain_loss_counts_each_domain_half_and_measures_accuracy() -> None:
    logits = torch.tensor([10.0, 10.0, 10.0, -10.0])  # 3 source rows, 1 target row, all right
    loss, accuracy = domain_loss_and_accuracy(logits, 3)
    assert float(accuracy) == 1.0 and float(loss) < 1e-3
    wrong = domain_loss_and_accuracy(-logits, 3)
    assert float(wrong[1]) == 0.0 and float(wrong[0]) == pytest.approx(10.0, rel=1e-3)


def test_cdan_conditions_on_predictions_and_entropy_weights() -> None:
    f, g = torch.randn(4, 3), torch.softmax(torch.randn(4, 2), dim=1)
    mapped = MultilinearMap()(f, g)
    assert mapped.shape == (4, 6) and torch.allclose(mapped[0], torch.outer(g[0], f[0]).flatten())
    randomized = RandomizedMultilinearMap(3, 2, output_dim=4096)
    # inner products of the randomized map estimate those of the outer product
    estimate = randomized(f, g) @ randomized(f, g).T
    exact = mapped @ mapped.T
    assert torch.allclose(estimate, exact, atol=0.35 * float(exact.abs().max()))
    config = Config(discriminator_dim=16)
    plain, weighted = CDAN.build(shape(3, 2), config), CDANE.build(shape(3, 2), config)
    assert not plain.entropy_conditioning and weighted.entropy_conditioning
    value, metrics = weighted.compare(torch.randn(8, 3), torch.randn(8, 3), torch.randn(8, 2), torch.randn(8, 2), 0.5)
    assert value.ndim == 0 and "domain_accuracy" in metrics
    assert isinstance(CDAN.build(shape(100, 100), config).map, RandomizedMultilinearMap)  # d * C above 4096


def test_mcc_is_low_for_confident_distinct_predictions_and_high_for_confusion() -> None:
    confident = torch.eye(4) * 50.0
    confused = torch.zeros(4, 4)
    assert float(class_confusion(confident)) < 0.01
    assert float(class_confusion(confused)) == pytest.approx(3 / 4, rel=1e-5)  # (C-1)/C for uniform predictions


def test_adda_gradients_reach_only_their_own_player() -> None:
    model = TransferModel(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU()), 8, 3, [["0.weight", "0.bias"]],
                          bottleneck_dim=4)
    loss = AdversarialDiscriminativeLoss(4, hidden=8)
    loss.attach(model)
    assert not any(p.requires_grad for p in model.head.parameters())
    source_features, target_features = loss.features(model, torch.randn(5, 6), torch.randn(5, 6))
    assert not source_features.requires_grad  # the source encoder is frozen
    value, metrics = loss.compare(source_features, target_features, None, None, 0.5)
    value.backward()
    assert model.backbone[0].weight.grad.abs().sum() > 0  # the target encoder learns to fool D
    assert all(p.grad is None for p in loss.source_encoder.parameters())
    # D's gradient is exactly that of its own loss on detached features: the encoder's loss adds nothing to it
    copy = AdversarialDiscriminativeLoss(4, hidden=8)
    copy.discriminator.load_state_dict(loss.discriminator.state_dict())
    joint = torch.cat([source_features, target_features]).detach()
    domain_loss_and_accuracy(copy.discriminator(joint), len(source_features))[0].backward()
    for mine, alone in zip(loss.discriminator.parameters(), copy.discriminator.parameters()):
        assert torch.allclose(mine.grad, alone.grad, atol=1e-6)
    assert float(metrics["encoder_loss"]) > 0


def test_adda_encoder_sees_the_discriminator_on_the_joint_batch() -> None:
    # On a target-only batch the discriminator's BatchNorm would cancel a uniform shift of the target
    # features, so the encoder's loss could not see the gap it has to close (the digits run collapsed).
    torch.manual_seed(0)
    loss = AdversarialDiscriminativeLoss(4, hidden=8).train()
    source = batch(16, 4, seed=1)
    near, far = batch(16, 4, seed=2), batch(16, 4, seed=2) + 5.0
    encoder_loss = [float(loss.compare(source, target, None, None, 0.5)[1]["encoder_loss"]) for target in (near, far)]
    assert abs(encoder_loss[1] - encoder_loss[0]) > 1e-3, encoder_loss  # a target-only batch gives 0


def test_adda_encoder_is_warm_started_while_the_discriminator_learns_from_the_first_step() -> None:
    # At full strength from step 0 the encoder chases a discriminator that knows nothing yet and wrecks
    # the source features (MNIST->USPS fell from 55% to 22%); its loss ramps up like DANN's reversal.
    def gradients(progress: float) -> tuple[float, float]:
        torch.manual_seed(0)
        model = TransferModel(torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU()), 8, 3,
                              [["0.weight", "0.bias"]], bottleneck_dim=4)
        loss = AdversarialDiscriminativeLoss(4, hidden=8)
        loss.attach(model)
        source_features, target_features = loss.features(model, torch.randn(5, 6), torch.randn(5, 6) + 2.0)
        loss.compare(source_features, target_features, None, None, progress)[0].backward()
        discriminator = sum(float(p.grad.abs().sum()) for p in loss.discriminator.parameters())
        return float(model.backbone[0].weight.grad.abs().sum()), discriminator

    (encoder_start, discriminator_start), (encoder_mid, _), (encoder_end, _) = map(gradients, (0.0, 0.1, 1.0))
    assert encoder_start == 0.0 and discriminator_start > 0
    assert 0 < encoder_mid < encoder_end


def shape(features_dim: int, num_classes: int) -> Any:
    """What a loss term's build reads of the model."""
    return SimpleNamespace(features_dim=features_dim, num_classes=num_classes)


def test_build_loss_terms_adds_mcc_and_refuses_it_twice() -> None:
    losses = build_loss_terms(Config(method="dann", mcc=0.5, discriminator_dim=8), shape(4, 3), paired=True)
    assert set(losses.terms) == {"transfer", "mcc"} and losses.weights == {"transfer": 1.0, "mcc": 0.5}
    assert "mcc_loss" in losses.metric_names and "transfer_loss" in losses.metric_names
    with pytest.raises(ConfigError, match="--mcc adds minimum class confusion"):
        build_loss_terms(Config(method="mcc", mcc=0.5), shape(4, 3), paired=True)
    with pytest.raises(ConfigError, match="unknown adaptation method 'dan2'"):
        Config(method="dan2")
    with pytest.raises(ConfigError, match="--method l2sp is not an adaptation method"):
        Config(method="l2sp")
    assert set(adaptation_methods()) >= {"source-only", "dan", "coral", "dann", "cdan", "cdan+e", "adda", "mcc", "jan"}
    assert "l2sp" in LOSSES and "l2sp" not in adaptation_methods()
