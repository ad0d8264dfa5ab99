"""Exact resume: the random state of a run travels in its checkpoints.

Lightning's checkpoints hold the weights, the optimizer, the scheduler and the loop's position, but
not the random number generators. A resumed run would draw another shuffle order, other
augmentations and other dropout masks than the run that was interrupted, and end elsewhere. This
callback stores, in every checkpoint, the state of the generators that decide them:

- torch's (CPU and CUDA), numpy's and Python's global generators (augmentation, dropout, mixup);
- the generators of the training loaders (shuffle order and the seeds of the loader's workers);

and restores them when a run resumes. A checkpoint is written at the end of an epoch, so a run
killed in the middle of an epoch restarts that epoch from the state it started with, and the
resumed run repeats the uninterrupted one batch for batch (``tests/engine/test_exact_resume.py``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader


def loader_generators(loader: DataLoader[Any] | CombinedLoader) -> list[torch.Generator]:
    """The generators that decide a training loader's order and worker seeds, in a fixed order."""
    loaders: Iterable[Any] = loader.iterables.values() if isinstance(loader, CombinedLoader) else [loader]
    found: list[torch.Generator] = []
    for item in loaders:
        for generator in (getattr(item, "generator", None), getattr(item.sampler, "generator", None),
                          getattr(item.batch_sampler, "generator", None)):
            if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
                found.append(generator)
    return found


class RandomState(pl.Callback):
    """Saves the random generators' state in each checkpoint and restores it on resume."""

    def __init__(self, generators: list[torch.Generator]) -> None:
        self.generators = generators

    def state_dict(self) -> dict[str, Any]:
        name, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(position), int(has_gauss),
                      float(gauss)],
            "python": random.getstate(),
            "loaders": [generator.get_state() for generator in self.generators],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available() and len(state_dict["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        name, keys, position, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if len(state_dict["loaders"]) == len(self.generators):
            for generator, state in zip(self.generators, state_dict["loaders"]):
                generator.set_state(state)
