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
    from cvtransfer.data.loaders import drop_last_for

    # 48 images, batch 32: one process drops the last 16; two processes get 24 each, which must train.
    assert drop_last_for(48, 32, world_size=1)
    assert not drop_last_for(48, 32, world_size=2)
    assert drop_last_for(200, 32, world_size=2)


@pytest.mark.parametrize("balanced", [False, True])
def test_every_rank_runs_an_optimizer_step(balanced: bool) -> None:
    """Whatever the images, processes and batch size, every rank gets a batch: Lightning's sampler
    repeats images to give each rank its share, even with fewer images than processes."""
    from torch.utils.data import BatchSampler, DistributedSampler

    from cvtransfer.data.loaders import for_world_size

    for images in (1, 2, 3, 7, 48, 61):
        labels = [i % 2 for i in range(images)]
        dataset = torch.utils.data.TensorDataset(torch.zeros(images), torch.tensor(labels))
        for batch_size in (1, 8, 32, 100):
            loader = make_loader(dataset, batch_size, train=True, labels=labels, num_classes=2,
                                 balanced=balanced)
            for world_size in (1, 2, 3, 8):
                ranked = for_world_size(loader, world_size)
                for rank in range(world_size):
                    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank)
                    assert len(BatchSampler(sampler, batch_size, ranked.drop_last)) >= 1


def test_training_loader_is_remade_for_the_world_size() -> None:
    from cvtransfer.data.loaders import for_world_size

    dataset = torch.utils.data.TensorDataset(torch.zeros(48), torch.zeros(48, dtype=torch.long))
    loader = make_loader(dataset, 32, train=True, seed=3, num_workers=0)
    assert loader.drop_last and len(loader) == 1
    ranked = for_world_size(loader, world_size=2)
    assert not ranked.drop_last and len(ranked) == 2
    assert ranked.sampler is loader.sampler and ranked.generator is loader.generator
    assert ranked.batch_size == 32 and isinstance(ranked.sampler, torch.utils.data.RandomSampler)
    assert for_world_size(loader, world_size=1) is loader


def test_fit_decides_drop_last_on_each_ranks_share(split_dir, tmp_path, monkeypatch) -> None:
    """runner.train hands Lightning the loader remade for the Trainer's world size."""
    import lightning.pytorch as pl

    from cvtransfer.data.folders import discover
    from cvtransfer.engine.runner import train
    from tests.conftest import tiny_config

    fitted = []
    monkeypatch.setattr(pl.Trainer, "world_size", property(lambda self: 2))
    monkeypatch.setattr(pl.Trainer, "fit", lambda self, module, train_loader, *args, **kwargs:
                        fitted.append(train_loader))
    config = tiny_config(split_dir, tmp_path / "run", batch_size=16)
    splits = discover(split_dir)
    assert len(splits.train) == 30  # one process: a batch of 16, the last 14 dropped
    setup = train(config, tmp_path / "run", splits)
    assert len(fitted) == 1 and fitted[0] is setup.train_loader
    assert fitted[0].drop_last is False and fitted[0].batch_size == 16  # 15 images on each of 2 ranks
