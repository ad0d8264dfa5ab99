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

# (support, labels, query, ways[, text=..., settings]) -> scores: the CLIP methods take keywords too
Classifier = Callable[..., torch.Tensor]
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


# -- CLIP methods: they also read ``text``, the zero-shot head's rows for the episode's classes (the normalised
# text embeddings times CLIP's logit scale, ways x D), and expect L2-normalised image features (clip: backbones).
NEEDS_TEXT = frozenset({"zeroshot", "wiseft", "tip_adapter", "tip_adapter_f"})


@FEWSHOT_METHODS.register("zeroshot")
def zero_shot(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int, *,
              text: torch.Tensor, **unused: float) -> torch.Tensor:
    """CLIP's zero-shot classifier: the queries against the class prompts' embeddings; the support set unused."""
    return query @ text.T


@FEWSHOT_METHODS.register("wiseft")
def wise_ft(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int, *, text: torch.Tensor,
            wise_alpha: float = 0.5, steps: int = 100, lr: float = 1e-3, **unused: float) -> torch.Tensor:
    """WiSE-FT (Wortsman et al. 2022) of the head: the zero-shot head fine-tuned on the support features (Adam,
    cross-entropy), then its weights interpolated, (1 - alpha) zero-shot + alpha fine-tuned. The image tower
    stays as it is (the paper fine-tunes it too; on a few cached features only the head is tuned here)."""
    weight = text.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([weight], lr=lr * float(text.norm(dim=1).mean()))  # steps relative to the scale
    with torch.enable_grad():
        for _ in range(steps):
            optimiser.zero_grad()
            F.cross_entropy(support @ weight.T, labels).backward()
            optimiser.step()
    return query @ ((1 - wise_alpha) * text + wise_alpha * weight.detach()).T


def _cache_logits(keys: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int,
                  beta: float) -> torch.Tensor:
    """Tip-Adapter's cache model: exp(-beta (1 - cosine)) affinities to the support keys, summed per class."""
    affinity = torch.exp(-beta * (1 - query @ keys.T))
    return affinity @ F.one_hot(labels, ways).to(affinity.dtype)


@FEWSHOT_METHODS.register("tip_adapter")
def tip_adapter(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int, *, text: torch.Tensor,
                tip_alpha: float = 1.0, tip_beta: float = 5.5, **unused: float) -> torch.Tensor:
    """Tip-Adapter (Zhang et al. 2022), training-free: zero-shot logits + alpha x the cache model's logits."""
    return query @ text.T + tip_alpha * _cache_logits(support, labels, query, ways, tip_beta)


@FEWSHOT_METHODS.register("tip_adapter_f")
def tip_adapter_f(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int, *,
                  text: torch.Tensor, tip_alpha: float = 1.0, tip_beta: float = 5.5, steps: int = 100,
                  lr: float = 1e-3, **unused: float) -> torch.Tensor:
    """Tip-Adapter-F: the cache's keys (started as the support features) fine-tuned on the support set (Adam,
    cross-entropy of the combined logits), the zero-shot head kept."""
    keys = support.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([keys], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            optimiser.zero_grad()
            logits = support @ text.T + tip_alpha * _cache_logits(keys, labels, support, ways, tip_beta)
            F.cross_entropy(logits, labels).backward()
            optimiser.step()
    return query @ text.T + tip_alpha * _cache_logits(keys.detach(), labels, query, ways, tip_beta)


# -- methods that train on the support images themselves, not on their features (few_shot/finetune.py)
NEEDS_IMAGES = frozenset({"finetune_last"})


@FEWSHOT_METHODS.register("finetune_last")
def finetune_last(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int, *,
                  tuner: Callable[..., torch.Tensor] | None = None, **unused: object) -> torch.Tensor:
    """Head + last stage fine-tuned on the support images (:func:`cvtransfer.few_shot.finetune.last_stage_tuner`);
    called with the episode's sample indices as ``support``/``query`` and the workflow's ``tuner``."""
    if tuner is None:
        raise ValueError("finetune_last trains on images: the few-shot workflow gives it a tuner")
    return tuner(support, labels, query, ways)
