"""Few-shot episodes (seeded, disjoint, class-major) and the classifiers against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cvtransfer.errors import DataError
from cvtransfer.few_shot.episodes import episode_labels, interval95, sample_episodes
from cvtransfer.few_shot.methods import (
    FEWSHOT_METHODS,
    NEEDS_IMAGES,
    NEEDS_TEXT,
    matching,
    protonet,
    simpleshot,
)

NAMES = ["a", "b", "c", "d"]
LABELS = np.repeat(np.arange(4), [6, 7, 8, 6])


def test_episodes_are_seeded_disjoint_and_class_major() -> None:
    episodes = sample_episodes(LABELS, NAMES, ways=3, shots=2, queries=4, episodes=50, seed=3)
    again = sample_episodes(LABELS, NAMES, ways=3, shots=2, queries=4, episodes=50, seed=3)
    assert all(np.array_equal(a.support, b.support) and np.array_equal(a.query, b.query) for a, b in zip(episodes, again))
    other = sample_episodes(LABELS, NAMES, ways=3, shots=2, queries=4, episodes=50, seed=4)
    assert any(not np.array_equal(a.support, b.support) for a, b in zip(episodes, other))
    for episode in episodes:
        assert len(set(episode.classes.tolist())) == 3 and len(episode.support) == 6 and len(episode.query) == 12
        assert not set(episode.support.tolist()) & set(episode.query.tolist())
        assert LABELS[episode.support].tolist() == episode.classes[episode_labels(3, 2)].tolist()
        assert LABELS[episode.query].tolist() == episode.classes[episode_labels(3, 4)].tolist()
    assert {c for e in episodes for c in e.classes.tolist()} == {0, 1, 2, 3}


def test_a_class_too_small_for_shots_and_queries_is_named() -> None:
    with pytest.raises(DataError, match=r"class\(es\) 'a' \(6\), 'd' \(6\) have fewer than --shots \+ --queries = 7"):
        sample_episodes(LABELS, NAMES, ways=2, shots=2, queries=5, episodes=1)
    with pytest.raises(DataError, match="--ways 5 needs 5 classes but the data has 4"):
        sample_episodes(LABELS, NAMES, ways=5, shots=1, queries=1, episodes=1)


def test_interval_is_196_standard_errors() -> None:
    mean, half = interval95([0.5, 0.7, 0.9, 0.7])
    assert mean == pytest.approx(0.7)
    assert half == pytest.approx(1.96 * np.std([0.5, 0.7, 0.9, 0.7], ddof=1) / 2)
    assert interval95([0.5]) == (0.5, None)


SUPPORT = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
SUPPORT_LABELS = torch.tensor([0, 0, 1, 1])
QUERY = torch.tensor([[1.0, 1.0], [9.0, 9.0]])


def test_protonet_is_minus_the_squared_distance_to_class_means() -> None:
    expected = torch.tensor([[-(0.0 + 1.0), -(100.0 + 81.0)], [-(64.0 + 81.0), -(4.0 + 1.0)]])
    assert torch.allclose(protonet(SUPPORT, SUPPORT_LABELS, QUERY, 2), expected)


def test_matching_averages_a_softmax_over_support_cosines_per_class() -> None:
    cos = torch.nn.functional.normalize(QUERY, dim=1) @ torch.nn.functional.normalize(SUPPORT, dim=1).T
    attention = cos.softmax(dim=1)
    scores = matching(SUPPORT, SUPPORT_LABELS, QUERY, 2)  # two support images per class
    assert torch.allclose(scores, torch.stack([attention[:, :2].sum(1), attention[:, 2:].sum(1)], dim=1) / 2)
    assert torch.allclose(scores.sum(1), torch.full((2,), 0.5))


def test_matching_does_not_favour_a_class_with_more_support_images() -> None:
    support = torch.tensor([[1.0, 0.0]] * 10 + [[0.0, 1.0]] * 2)  # 10 images of class 0, 2 of class 1
    labels = torch.tensor([0] * 10 + [1] * 2)
    query = torch.tensor([[0.0, 1.0]])  # identical to class 1's images, orthogonal to class 0's
    assert matching(support, labels, query, 2).argmax(1).tolist() == [1]


def test_simpleshot_ignores_a_shift_of_every_feature() -> None:
    shift = torch.tensor([5.0, -3.0])
    assert torch.allclose(simpleshot(SUPPORT, SUPPORT_LABELS, QUERY, 2),
                          simpleshot(SUPPORT + shift, SUPPORT_LABELS, QUERY + shift, 2), atol=1e-5)


@pytest.mark.parametrize("name", [name for name in FEWSHOT_METHODS.names() if name not in NEEDS_IMAGES])
def test_every_method_separates_separable_classes(name: str) -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 32, generator=generator) * 4
    support = centres.repeat_interleave(3, dim=0) + torch.randn(15, 32, generator=generator)
    query = centres.repeat_interleave(4, dim=0) + torch.randn(20, 32, generator=generator)
    extra = {}
    if name in NEEDS_TEXT:  # CLIP's methods: normalised features, the class prompts' rows (here: the centres)
        support, query = F.normalize(support, dim=1), F.normalize(query, dim=1)
        extra = {"text": 20 * F.normalize(centres, dim=1)}
    scores = FEWSHOT_METHODS.get(name)(support, torch.arange(5).repeat_interleave(3), query, 5, **extra)
    assert scores.shape == (20, 5)
    assert (scores.argmax(1) == torch.arange(5).repeat_interleave(4)).float().mean() >= 0.95


@pytest.mark.parametrize("name", [name for name in FEWSHOT_METHODS.names() if name not in NEEDS_IMAGES])
def test_two_way_episodes_give_two_columns(name: str) -> None:
    support = torch.tensor([[1.0, 0.0], [2.0, 0.2], [0.0, 1.0], [0.2, 2.0]])  # two directions, for cosine too
    query = torch.tensor([[3.0, 0.5], [0.5, 3.0]])
    extra = {}
    if name in NEEDS_TEXT:
        support, query = F.normalize(support, dim=1), F.normalize(query, dim=1)
        extra = {"text": 10 * torch.eye(2)}
    scores = FEWSHOT_METHODS.get(name)(support, SUPPORT_LABELS, query, 2, **extra)
    assert scores.shape == (2, 2) and scores.argmax(1).tolist() == [0, 1]
