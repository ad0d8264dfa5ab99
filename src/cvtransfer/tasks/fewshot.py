"""Few-shot meta-training: a backbone trained on episodes of base classes, so that its features tell
novel classes apart from a few images each (Prototypical Networks, Snell et al. 2017).

``cvtransfer fit DATA_DIR --task fewshot --train-ways 60 --train-shots 5 --queries 5``:

- classes, not images, are split (:func:`cvtransfer.data.folders.discover_class_splits`): train/ val/
  test/ folders of different classes, or --val-split (--test-split) of the classes held out;
- each training step is one episode of ``--train-ways`` classes (the episodic stream,
  :mod:`cvtransfer.few_shot.sampler`): the query images are classified by minus the squared Euclidean
  distance to the prototypes (mean support features), and the loss is their cross-entropy;
- every epoch the same seeded episodes of the val classes (--ways, the first --shots, --queries) give
  val_loss and val_accuracy, with BatchNorm's running statistics (eval mode): what picks best.ckpt;
- at the end the head becomes the prototypes of all the run's classes as a linear layer
  (2 c.f - |c|^2, which ranks classes as -|f - c|^2 does), so ``predict`` classifies among them, and
  metrics.json holds ProtoNet's accuracy on --episodes episodes of the test classes (else the val
  classes) for each --shots, with its 95% interval, BatchNorm as --bn-stats says.

Training episodes normalise with their own batch statistics (train mode), as the paper's code does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import Metric

from cvtransfer.errors import ConfigError
from cvtransfer.few_shot.methods import prototypes
from cvtransfer.few_shot.sampler import QUERY, SUPPORT
from cvtransfer.models.transfer_model import TransferModel
from cvtransfer.options import TRAIN, opt
from cvtransfer.tasks.base import TASKS, ReportSection
from cvtransfer.tasks.classification import Classification

if TYPE_CHECKING:
    from pathlib import Path

    from cvtransfer.config import Config
    from cvtransfer.data.folders import DatasetSplits
    from cvtransfer.models.factory import BuiltModel
    from cvtransfer.run import Run

VAL_EPISODES = 100  # validation episodes per epoch, at most (--episodes if fewer): the same ones every epoch


@dataclass
class FewShotOptions:
    train_ways: int = opt(0, "--task fewshot: classes per training episode (0: --ways); ProtoNet trains with more "
                          "than it tests (60 on Omniglot).", TRAIN, 0)
    train_shots: int = opt(0, "--task fewshot: support images per class in a training episode (0: the first "
                           "--shots).", TRAIN, 0)
    episodes_per_epoch: int = opt(100, "--task fewshot: training episodes (steps) per epoch.", TRAIN, 1)


def episode_scores(features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores of the queries against each prototype, the queries' episode labels) of one episode's features;
    ``targets`` rows are (episode label, role). Scores are minus squared Euclidean distances, written out as
    |q|^2 - 2 q.c + |c|^2 so that their gradient is defined where a query sits on a prototype."""
    labels, roles = targets[:, 0], targets[:, 1]
    support, query = roles == SUPPORT, roles == QUERY
    ways = int(labels.max()) + 1
    centres = prototypes(features[support].float(), labels[support], ways)
    queries = features[query].float()
    distances = queries.pow(2).sum(1, keepdim=True) - 2 * queries @ centres.T + centres.pow(2).sum(1)
    return -distances, labels[query]


def embed(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The features of ``x`` by the run's model (its backbone and bottleneck)."""
    assert isinstance(network, TransferModel), "episodes train the whole model"
    return network.embed(x)


class QueryAccuracy(Metric):
    """The share of query images classified right, over every episode seen (what ``update`` gets is
    :func:`episode_scores`'s pair; the batch's targets are not needed again)."""

    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, outputs: tuple[torch.Tensor, torch.Tensor], targets: Any = None) -> None:
        scores, truth = outputs
        self.correct = self.correct + (scores.argmax(dim=1) == truth).sum()
        self.total = self.total + truth.numel()

    def compute(self) -> torch.Tensor:
        return self.correct.float() / self.total.clamp(min=1)


@TASKS.register("fewshot")
class FewShot(Classification):
    """Episodes of base classes, ProtoNet's loss; judged by episode accuracy on novel classes."""

    name = "fewshot"
    run_files = ("classes.json", "metrics.json", "confusion.png", "curves.png")
    report_sections = ("summary", "config", "data", "curves", "per-class", "confusion", "errors", "diagnosis")
    options = FewShotOptions
    train_metric = False  # the training episodes' query accuracy is a loss part (train_accuracy)
    episodic = True  # the engine draws episodes (engine/streams.py's episodic_stream)

    def check_options(self, config: Config) -> None:
        from cvtransfer.few_shot.evaluation import parse_shots
        from cvtransfer.strategies import get_strategy

        if get_strategy(config.strategy).uses_feature_cache:
            raise ConfigError(f"--strategy {config.strategy} trains only a head on cached features, and --task fewshot "
                              "trains the backbone: use full, partial, gradual or l2sp")
        parse_shots(config.shots)

    def discover_splits(self, config: Config) -> DatasetSplits:
        from cvtransfer.data.folders import discover_class_splits

        assert config.data is not None
        return discover_class_splits(config.data, config.val_split, config.test_split, config.seed,
                                     config.max_image_pixels)

    def network_loss(self, network: nn.Module, x: Any, y: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        scores, truth = episode_scores(embed(network, x), y)
        return F.cross_entropy(scores, truth), {"accuracy": (scores.argmax(dim=1) == truth).float().mean().detach()}

    def loss_parts(self, config: Config) -> tuple[str, ...]:
        return ("accuracy",)

    def network_outputs(self, network: nn.Module, x: Any, y: Any) -> tuple[Any, torch.Tensor]:
        scores, truth = episode_scores(embed(network, x), y)
        return (scores, truth), F.cross_entropy(scores, truth)

    def metric(self, num_classes: int) -> Metric:
        return QueryAccuracy()

    def complete_model(self, built: BuiltModel, splits: Any, config: Config, device: torch.device) -> None:
        """The head becomes the prototypes of every class of the run (all its images, eval statistics)."""
        from cvtransfer.data.features import compute_features
        from cvtransfer.data.loaders import default_workers

        samples = splits.train + splits.val + splits.test
        features, labels = compute_features(built.model.backbone, samples, built.preprocessing, config.batch_size,
                                            default_workers(config.num_workers), device,
                                            config.max_image_pixels)
        centres = prototypes(features.float(), labels, len(splits.classes))
        head = built.model.head
        with torch.no_grad():
            head.weight.copy_(2 * centres.to(head.weight))
            head.bias.copy_(-centres.pow(2).sum(1).to(head.bias))

    def evaluate_run(self, run: Run, data: str | Path | None, out: Path,
                     device: torch.device) -> tuple[dict[str, Any], Any]:
        from cvtransfer.few_shot.evaluation import evaluate_episodes

        return evaluate_episodes(run, data, out, device), None

    def summary(self, metrics: dict[str, Any]) -> str:
        settings = ", ".join(f"{row['shots']}-shot {row['accuracy']:.4f}" +
                             ("" if row["ci95"] is None else f" +- {row['ci95']:.4f}") for row in metrics["results"])
        return (f"{metrics['split']}: {metrics['ways']}-way episodes of {metrics['num_classes']} classes ({settings}; "
                f"{metrics['episodes']} episodes, BatchNorm {metrics['bn_stats']})")

    def report_builders(self, run: Run, title: str, seconds: float | None) -> list[ReportSection]:
        from cvtransfer.evaluation.fewshot_report import fewshot_run_sections

        return fewshot_run_sections(run, title, seconds)

    def method_label(self, config: Config) -> str:
        ways = config.train_ways or config.ways
        return f"ProtoNet episodes ({ways}-way), {config.strategy}"
