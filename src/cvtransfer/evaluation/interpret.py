"""What a trained model does on the evaluation images: top losses, Grad-CAM, a 2-D feature embedding.

Grad-CAM (Selvaraju et al. 2017, https://arxiv.org/abs/1610.02391): for class c and a feature map
A^k of the target layer, L^c = ReLU(sum_k alpha_k^c A^k) with alpha_k^c = mean_ij dy^c / dA^k_ij.
It is computed by pytorch-grad-cam; this module only chooses the layer and draws the results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from cvtransfer.data.features import compute_features
from cvtransfer.data.images import load_rgb
from cvtransfer.data.transforms import Preprocessing, eval_transform
from cvtransfer.evaluation.plots import MAX_LEGEND_ENTRIES, class_colors
from cvtransfer.models.transfer_model import TransferModel

Sample = tuple[str, int]
UNLABELLED = -1  # label of target images whose class is unknown (adaptation runs)
MAX_PREFIX_TOKENS = 8  # class token, distillation token, registers


@dataclass
class Predictions:
    """The model's outputs on a list of samples: softmax probabilities and backbone features."""

    samples: list[Sample]
    probs: np.ndarray  # (N, classes)
    features: np.ndarray  # (N, num_features)

    @property
    def labels(self) -> np.ndarray:
        return np.array([label for _, label in self.samples], dtype=int)

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def losses(self) -> np.ndarray:
        """Cross-entropy -log p(true class) per sample (NaN where the label is unknown)."""
        labels = self.labels
        known = labels >= 0
        losses = np.full(len(labels), np.nan)
        losses[known] = -np.log(np.clip(self.probs[known, labels[known]], 1e-12, 1.0))
        return losses


def predict_samples(model: TransferModel, samples: Sequence[Sample], preprocessing: Preprocessing,
                    **compute_kwargs: Any) -> Predictions:
    """Probabilities and backbone features of ``samples`` in one pass (``compute_kwargs``: batch size, device...)."""
    features, _ = compute_features(model.backbone, samples, preprocessing, **compute_kwargs)
    model = model.eval().to(features.device)
    with torch.no_grad():  # forward_head: the bottleneck (adaptation runs) then the head
        probs = model.forward_head(features).float().softmax(dim=1)
    return Predictions(list(samples), probs.numpy(), features.numpy())


def top_losses(predictions: Predictions, count: int) -> list[int]:
    """Indices of the misclassified samples with the highest loss (the most confidently wrong) first."""
    labels = predictions.labels
    wrong = np.flatnonzero((labels >= 0) & (predictions.predicted != labels))
    losses = predictions.losses()[wrong]
    return [int(i) for i in wrong[np.argsort(-losses, kind="stable")][:count]]


def top_losses_figure(predictions: Predictions, indices: Sequence[int], class_names: list[str],
                      max_pixels: int, columns: int = 4) -> plt.Figure:
    """The images of ``indices`` with their true and predicted labels, probability and loss."""
    rows = math.ceil(len(indices) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 3.2 * rows), squeeze=False)
    losses = predictions.losses()
    for ax, index in zip(axes.flat, indices):
        path, label = predictions.samples[index]
        image = load_rgb(path, max_pixels)
        image.thumbnail((160, 160))
        predicted = int(predictions.predicted[index])
        ax.imshow(np.asarray(image), interpolation="nearest" if min(image.size) < 64 else "antialiased")
        ax.set_title(f"true: {class_names[label]}\npredicted: {class_names[predicted]} "
                     f"({predictions.probs[index, predicted]:.2f})\nloss {losses[index]:.2f}", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("Most confidently wrong evaluation images (probability of the predicted class)")
    fig.tight_layout()
    return fig


def sample_per_class(labels: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` indices taking the classes in turn (first images of each class first)."""
    by_class = [list(np.flatnonzero(labels == c)) for c in sorted(set(labels.tolist()))]
    chosen: list[int] = []
    while len(chosen) < count and any(by_class):
        for members in by_class:
            if members and len(chosen) < count:
                chosen.append(int(members.pop(0)))
    return chosen


@dataclass
class CamTarget:
    """The layer Grad-CAM reads, and how to turn its output into (batch, channels, height, width)."""

    name: str
    layer: nn.Module
    reshape: Callable[[torch.Tensor], torch.Tensor] | None


def cam_target(model: TransferModel, input_size: int) -> CamTarget:
    """The deepest layer whose output is a map of at least 2x2 that the class score's gradient reaches.

    Candidates, deepest first: timm models name their stage outputs in ``feature_info`` (``layer4``,
    ``stages.3``, ViT's ``blocks.11``), each followed by its first norm when it is a transformer block
    (``blocks.11.norm1``); other models (torchvision, tinycnn) offer every module whose output is still
    spatial, found with forward hooks on one image in execution order. A candidate is kept when its
    output is at least 2x2 (at small inputs a CNN's last map is 1x1: an earlier stage is used) and the
    gradient of the top class reaches it at two positions or more: under class-token pooling a ViT's
    last block passes gradient to its class token only, so its maps would be blank, while the block's
    ``norm1`` feeds the attention that mixes the patch tokens into the class token.

    The output shape decides the reshape: NCHW as is, NHWC (Swin) permuted, tokens (ViT) stripped
    of their class/register tokens and made square. Raises ValueError saying why no layer qualifies.
    """
    backbone = model.backbone
    outputs, score = _probe(model, input_size)
    shapes = {name: tuple(tensor.shape) for name, tensor in outputs.items()}
    info = getattr(backbone, "feature_info", None)
    channels: dict[str, int] = {}
    names: list[str] = []
    if info:
        channels = {entry["module"]: int(entry["num_chs"]) for entry in info}
        names = [n for entry in reversed(info) for n in _with_first_norm(backbone, entry["module"])]
    names += [name for name in reversed(shapes) if name not in names]  # then every module, deepest first
    candidates = []
    for name in names:
        if name in shapes:
            layout = _spatial_layout(shapes[name], channels.get(name))
            if layout is not None:
                candidates.append((name, layout))
    if not candidates:
        largest = max((_side(shapes[n]) for n in names if n in shapes), default=0)
        raise ValueError(f"no feature map of the backbone is at least 2x2 at {input_size} px input (the "
                         f"largest is {largest}x{largest}): Grad-CAM needs a spatial map; a larger "
                         "--image-size gives one")
    for name, layout in candidates:  # deepest first: each check back-propagates only down to that layer
        if _gradient_spread(score, outputs[name], layout) >= 2:
            return CamTarget(name, backbone.get_submodule(name), _RESHAPES[layout])
    tried = ", ".join(name for name, _ in candidates[:4]) + ("..." if len(candidates) > 4 else "")
    raise ValueError("the gradient of the class score reaches no feature map at more than one position "
                     f"(tried {tried})")


def _with_first_norm(backbone: nn.Module, name: str) -> list[str]:
    """``name``, then ``name.norm1`` when the module is a transformer block (its input to the attention)."""
    module = backbone.get_submodule(name)
    return [name, f"{name}.norm1"] if isinstance(getattr(module, "norm1", None), nn.Module) else [name]


def _probe(model: TransferModel, input_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The outputs of every named backbone module and the top class score, for one seeded random image.

    Outputs are in the order their forward passes finish; gradients are on, so each can be asked for
    the score's gradient.
    """
    outputs: dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                outputs.pop(name, None)
                outputs[name] = output
        return hook

    backbone = model.backbone
    handles = [m.register_forward_hook(record(n)) for n, m in backbone.named_modules() if n]
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, input_size, input_size, generator=generator).to(device).requires_grad_(True)
    was_training = model.training
    try:
        with torch.enable_grad():
            logits = model.eval()(image)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return outputs, logits[0, int(logits[0].argmax())]


def _gradient_spread(score: torch.Tensor, output: torch.Tensor, layout: str) -> int:
    """At how many positions of the map ``output`` (of ``layout``) ``score`` has a non-zero gradient.

    ``torch.autograd.grad`` to that tensor only: nothing below it is computed, no parameter gets a ``.grad``.
    """
    if not output.requires_grad:
        return 0
    (grad,) = torch.autograd.grad(score, output, retain_graph=True, allow_unused=True)
    if grad is None:
        return 0
    reshape = _RESHAPES[layout]
    grad = reshape(grad) if reshape else grad
    return int((grad.abs().sum(dim=1) > 0).sum())


def _side(shape: tuple[int, ...]) -> int:
    """The smaller spatial side of an NCHW map or a token sequence (0 for anything else)."""
    if len(shape) == 4:
        return min(shape[2], shape[3])
    return math.isqrt(shape[1]) if len(shape) == 3 else 0


def _spatial_layout(shape: tuple[int, ...], channels: int | None) -> str | None:
    """nchw, nhwc or tokens for an output that is a map of at least 2x2; None otherwise."""
    if len(shape) == 4:
        if channels is not None and shape[-1] == channels and shape[1] != channels:
            return "nhwc" if min(shape[1], shape[2]) >= 2 else None
        return "nchw" if min(shape[2], shape[3]) >= 2 else None
    if len(shape) == 3:
        side = math.isqrt(shape[1])
        return "tokens" if side > 1 and shape[1] - side * side <= MAX_PREFIX_TOKENS else None
    return None


def _nhwc_to_nchw(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.permute(0, 3, 1, 2)


def _tokens_to_nchw(tensor: torch.Tensor) -> torch.Tensor:
    side = math.isqrt(tensor.shape[1])
    patches = tensor[:, tensor.shape[1] - side * side:]  # class / register tokens come first
    return patches.reshape(tensor.shape[0], side, side, tensor.shape[2]).permute(0, 3, 1, 2)


_RESHAPES: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
    "nchw": None, "nhwc": _nhwc_to_nchw, "tokens": _tokens_to_nchw}


def grad_cam(model: TransferModel, samples: Sequence[Sample], preprocessing: Preprocessing,
             classes: Sequence[int], max_pixels: int, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray, str]:
    """(input images in [0, 1] as NHWC, Grad-CAM maps in [0, 1] as NHW, target layer name) for ``classes``."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = model.eval().to(device)
    transform = eval_transform(preprocessing)
    inputs = torch.stack([transform(load_rgb(path, max_pixels)) for path, _ in samples]).to(device)
    target = cam_target(model, preprocessing.input_size)
    cam = GradCAM(model, [target.layer], reshape_transform=target.reshape)
    try:
        with torch.enable_grad():
            maps = cam(inputs, [ClassifierOutputTarget(int(c)) for c in classes])
    finally:
        cam.activations_and_grads.release()
    mean = torch.tensor(preprocessing.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, device=device).view(1, 3, 1, 1)
    images = (inputs * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return images, maps, target.name


def grad_cam_figure(images: np.ndarray, maps: np.ndarray, titles: Sequence[str], layer: str,
                    columns: int = 4) -> plt.Figure:
    """Each image above its Grad-CAM overlay, with one colour bar."""
    rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(2 * rows, columns, figsize=(2.4 * columns, 4.6 * rows), squeeze=False)
    overlay = None
    for i, (image, heat, title) in enumerate(zip(images, maps, titles)):
        top, bottom = axes[2 * (i // columns), i % columns], axes[2 * (i // columns) + 1, i % columns]
        top.imshow(image, interpolation="nearest")
        top.set_title(title, fontsize=9)
        bottom.imshow(image, interpolation="nearest")
        overlay = bottom.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"Grad-CAM of the predicted class at layer '{layer}' (input as the model sees it)")
    fig.tight_layout()
    if overlay is not None:
        fig.colorbar(overlay, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02,
                     label="Grad-CAM relevance (0 to 1, per image)")
    return fig


EXACT_TSNE_POINTS = 200  # up to this many points exact t-SNE is faster than Barnes-Hut (and exact)


def embed_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE of ``features`` to 2-D (after PCA to 50 dimensions when wider, as is customary)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float32)
    if features.shape[1] > 50 and len(features) > 50:
        features = PCA(50, random_state=seed).fit_transform(features)
    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3)))
    method = "exact" if len(features) <= EXACT_TSNE_POINTS else "barnes_hut"
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, method=method)
    return tsne.fit_transform(features)


def subsample(count: int, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``count`` items, chosen at random (seeded)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def embedding_figure(points: np.ndarray, labels: np.ndarray, class_names: list[str],
                     domains: np.ndarray | None = None) -> plt.Figure:
    """Scatter of 2-D points coloured by class, and by domain (source / target) when ``domains`` is given."""
    panels = 1 if domains is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 5.4), squeeze=False)
    by_class = axes[0, 0]
    colors = class_colors(len(class_names))
    for index, name in enumerate(class_names):
        chosen = labels == index
        if chosen.any():
            by_class.scatter(*points[chosen].T, s=14, color=colors[index], label=name, alpha=0.8)
    if (labels == UNLABELLED).any():
        chosen = labels == UNLABELLED
        by_class.scatter(*points[chosen].T, s=10, color="lightgrey", label="unlabelled", alpha=0.8)
    by_class.set_title("Coloured by true class")
    if len(class_names) <= MAX_LEGEND_ENTRIES:
        by_class.legend(fontsize=8, markerscale=1.5, loc="best")
    if domains is not None:
        ax = axes[0, 1]
        for name, color in (("source", "tab:blue"), ("target", "tab:orange")):
            chosen = domains == name
            ax.scatter(*points[chosen].T, s=14, color=color, label=f"{name} ({chosen.sum()})", alpha=0.7)
        ax.set_title("Coloured by domain")
        ax.legend(fontsize=8, markerscale=1.5)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1 (no unit)")
        ax.set_ylabel("t-SNE 2 (no unit)")
    fig.suptitle("Backbone features of the evaluation images, t-SNE to 2-D")
    fig.tight_layout()
    return fig
