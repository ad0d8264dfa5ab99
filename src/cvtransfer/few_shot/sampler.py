"""Episodes as training batches: the episodic stream of meta-training (``fit --task fewshot``).

A batch is one N-way episode of images: for each of its classes, ``shots`` support images then
``queries`` query images. Its targets are rows ``(episode label, role)`` with role 0 for support and
1 for query, so the loss reads the episode from the batch itself, whatever its size.

:class:`EpisodeBatchSampler` draws fresh episodes every epoch from a seeded ``torch.Generator`` (the
generator an exact resume restores, like a shuffling loader's); :func:`fixed_episode_batches` turns the
seeded episodes of :func:`cvtransfer.few_shot.episodes.sample_episodes` into the same batches, for
validation on the same episodes every epoch. torch's samplers draw single indices or plain batches;
none draws class-balanced episodes, hence this small sampler.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cvtransfer.errors import DataError
from cvtransfer.few_shot.episodes import Episode

SUPPORT, QUERY = 0, 1
EpisodeItem = tuple[int, int, int]  # (sample index, episode label, role)


class EpisodeBatchSampler:
    """``episodes`` batches per epoch, each ``ways`` classes of ``shots + queries`` images (no image twice in an
    episode), drawn with ``generator``."""

    def __init__(self, labels: Sequence[int], class_names: Sequence[str], ways: int, shots: int, queries: int,
                 episodes: int, seed: int) -> None:
        self.by_class = _images_by_class(labels, class_names, ways, shots + queries)
        self.ways, self.shots, self.queries, self.episodes = ways, shots, queries, episodes
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.episodes

    def __iter__(self) -> Iterator[list[EpisodeItem]]:
        classes = list(self.by_class)
        for _ in range(self.episodes):
            chosen = torch.randperm(len(classes), generator=self.generator)[:self.ways].tolist()
            batch: list[EpisodeItem] = []
            for label, position in enumerate(chosen):
                images = self.by_class[classes[position]]
                picks = torch.randperm(len(images), generator=self.generator)[:self.shots + self.queries].tolist()
                batch += [(int(images[i]), label, SUPPORT if k < self.shots else QUERY) for k, i in enumerate(picks)]
            yield batch


def fixed_episode_batches(episodes: Sequence[Episode], shots: int, queries: int) -> list[list[EpisodeItem]]:
    """``episodes`` (sampled once, seeded) as batches in :class:`EpisodeBatchSampler`'s layout."""
    batches = []
    for episode in episodes:
        batch: list[EpisodeItem] = []
        for label in range(len(episode.classes)):
            batch += [(int(i), label, SUPPORT) for i in episode.support[label * shots:(label + 1) * shots]]
            batch += [(int(i), label, QUERY) for i in episode.query[label * queries:(label + 1) * queries]]
        batches.append(batch)
    return batches


class EpisodeItems(Dataset):
    """``dataset``'s image for an :data:`EpisodeItem`, with the target row ``(episode label, role)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]  # map-style datasets have a length

    def __getitem__(self, item: EpisodeItem) -> tuple[Any, torch.Tensor]:
        index, label, role = item
        return self.dataset[index][0], torch.tensor([label, role])


def _images_by_class(labels: Sequence[int], class_names: Sequence[str], ways: int,
                     per_class: int) -> dict[int, np.ndarray]:
    """The sample indices of each class that has at least ``per_class`` images; too few such classes is an error."""
    values = np.asarray(labels)
    by_class = {int(c): np.flatnonzero(values == c) for c in sorted(set(values.tolist()))}
    usable = {c: found for c, found in by_class.items() if len(found) >= per_class}
    if len(usable) < ways:
        short = [f"'{class_names[c]}' ({len(found)})" for c, found in by_class.items() if len(found) < per_class]
        raise DataError(f"training episodes need {ways} classes of at least {per_class} images (--train-shots + "
                        f"--queries) but {len(usable)} have that many{' (short: ' + ', '.join(short[:3]) + ')' if short else ''}:"
                        " lower --train-ways, --train-shots or --queries")
    return usable
