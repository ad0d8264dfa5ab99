"""Few-shot classifiers: each reads the support features of one episode (ways x shots, labels 0..ways-1) and
scores the query features (one column per class, the highest wins).

The nearest-centroid family and the matching classifier are a few tensor operations each; baseline++ and
the fine-tuned head train on the support set (a cosine head by a few Adam steps, a logistic regression by
scikit-learn). All are small enough to live in one module of one registry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch.nn import functional as F

from cvtransfer.registry import Registry

Classifier = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
FEWSHOT_METHODS: Registry[Classifier] = Registry("few-shot method")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run an episode's tiny tensors on one thread: several spin for nothing (and crawl when the cores are
    busy: 40x slower measured on 2 shared cores for baseline++'s 100 steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def prototypes(support: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """The mean support feature of each class (ways x D)."""
    return torch.zeros(ways, support.shape[1], dtype=support.dtype).index_add_(0, labels, support) / \
        torch.bincount(labels, minlength=ways).clamp(min=1).unsqueeze(1).to(support.dtype)


@FEWSHOT_METHODS.register("protonet")
def protonet(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """Prototypical networks (Snell et al. 2017): minus the squared Euclidean distance to each class mean."""
    return -torch.cdist(query, prototypes(support, labels, ways)).pow(2)


@FEWSHOT_METHODS.register("protonet_cosine")
def protonet_cosine(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """Prototypes compared by cosine similarity."""
    return F.normalize(query, dim=1) @ F.normalize(prototypes(support, labels, ways), dim=1).T


@FEWSHOT_METHODS.register("simpleshot")
def simpleshot(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """SimpleShot CL2N (Wang et al. 2019): features centred, L2-normalised, then the nearest class mean.

    The paper centres on the base classes' mean feature; without a base set the support set's mean is used
    (no query feature is looked at: the method stays inductive).
    """
    mean = support.mean(dim=0, keepdim=True)
    support, query = F.normalize(support - mean, dim=1), F.normalize(query - mean, dim=1)
    return -torch.cdist(query, prototypes(support, labels, ways))


@FEWSHOT_METHODS.register("matching")
def matching(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """Matching networks' classifier (Vinyals et al. 2016, without full-context embeddings): attention by a
    softmax over the cosine similarities to every support image, summed per class (divided by the class's
    support images, so that a support set of uneven classes does not favour the larger ones; in an episode,
    where every class has its K images, that is the paper's sum divided by K)."""
    attention = (F.normalize(query, dim=1) @ F.normalize(support, dim=1).T).softmax(dim=1)
    one_hot = F.one_hot(labels, ways).to(attention.dtype)
    return attention @ one_hot / one_hot.sum(dim=0).clamp(min=1)


@FEWSHOT_METHODS.register("baselinepp")
def baseline_plus_plus(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int,
                       steps: int = 100, scale: float = 10.0, lr: float = 0.01) -> torch.Tensor:
    """Baseline++ (Chen et al. 2019): a cosine classifier (class weights compared with the feature by cosine,
    times ``scale``) trained on the support set by Adam, started from the normalised prototypes."""
    weight = F.normalize(prototypes(support, labels, ways), dim=1).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([weight], lr=lr)
    support = F.normalize(support, dim=1)
    with torch.enable_grad():
        for _ in range(steps):
            optimiser.zero_grad()
            F.cross_entropy(scale * support @ F.normalize(weight, dim=1).T, labels).backward()
            optimiser.step()
    return scale * F.normalize(query, dim=1) @ F.normalize(weight.detach(), dim=1).T


@FEWSHOT_METHODS.register("finetune")
def finetune_head(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """The strong baseline: a new linear head fitted on the support features (L2-normalised; scikit-learn's
    L-BFGS logistic regression, C = 1), the backbone left as it is."""
    from sklearn.linear_model import LogisticRegression

    head = LogisticRegression(C=1.0, max_iter=1000)
    head.fit(F.normalize(support, dim=1).numpy(), labels.numpy())
    scores = torch.from_numpy(head.decision_function(F.normalize(query, dim=1).numpy()))
    return torch.stack([-scores, scores], dim=1) if ways == 2 else scores  # two classes: one margin
