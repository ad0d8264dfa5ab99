"""Episodic meta-training (``fit --task fewshot``): the episode sampler, ProtoNet's loss, splits by class,
BatchNorm statistics at evaluation, and the whole path from the CLI and the API on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import cvtransfer
from cvtransfer.data.folders import discover_class_splits
from cvtransfer.errors import DataError
from cvtransfer.few_shot.batchnorm import with_batch_statistics
from cvtransfer.few_shot.episodes import sample_episodes
from cvtransfer.few_shot.methods import protonet, protonet_cosine
from cvtransfer.few_shot.sampler import QUERY, SUPPORT, EpisodeBatchSampler, fixed_episode_batches
from cvtransfer.tasks.fewshot import QueryAccuracy, episode_scores
from tests.test_bad_inputs import run_cli

PALETTE = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40)]


def write_pattern_classes(root: Path, classes: int, per_class: int, size: int = 28, seed: int = 0) -> Path:
    """``classes`` class folders (up to 16): a square of one of 4 colours in one of 4 quadrants on noise."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        folder = root / f"c{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        row, col = divmod(k // 4, 2)
        half = size // 2
        for i in range(per_class):
            pixels = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
            top, left = row * half + rng.integers(1, 4), col * half + rng.integers(1, 4)
            pixels[top:top + half - 4, left:left + half - 4] = PALETTE[k % 4]
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def write_shifted_colours(root: Path, classes: int = 16, per_class: int = 8, size: int = 28, seed: int = 0) -> Path:
    """Classes told apart by a small colour shift under noise and a random brightness per image: hard for a
    network at its random initialisation (about 55% in 3-way 1-shot episodes)."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        folder = root / f"h{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (size, size, 3)) + rng.integers(-40, 40) + np.array([6 * k, 0, 3 * (15 - k)])
            Image.fromarray(np.clip(pixels + 60, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def patterns(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pattern_classes(tmp_path_factory.mktemp("patterns") / "data", 16, 8)


# -- the episode sampler

def test_episodes_hold_each_class_once_with_its_support_then_queries() -> None:
    labels = np.repeat(np.arange(10), 7)
    sampler = EpisodeBatchSampler(labels, [f"c{i}" for i in range(10)], ways=4, shots=2, queries=3, episodes=5, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    for batch in batches:
        indices = [index for index, _, _ in batch]
        assert len(batch) == 4 * 5 and len(set(indices)) == 20  # no image twice in an episode
        for label in range(4):
            items = [item for item in batch if item[1] == label]
            assert [role for _, _, role in items] == [SUPPORT] * 2 + [QUERY] * 3
            assert len({labels[index] for index, _, _ in items}) == 1  # one dataset class per episode label
        assert len({labels[batch[5 * k][0]] for k in range(4)}) == 4
    again = EpisodeBatchSampler(labels, [f"c{i}" for i in range(10)], 4, 2, 3, 5, seed=1)
    assert list(again) == batches  # seeded
    assert list(again) != batches  # the next epoch draws other episodes


def test_the_generator_state_restores_the_next_epoch() -> None:
    labels = np.repeat(np.arange(6), 4)
    sampler = EpisodeBatchSampler(labels, list("abcdef"), 3, 1, 2, 4, seed=0)
    list(sampler)
    state = sampler.generator.get_state()
    expected = list(sampler)
    sampler.generator.set_state(state)
    assert list(sampler) == expected


def test_too_few_classes_with_enough_images_is_a_one_line_error() -> None:
    labels = [0] * 5 + [1] * 5 + [2] * 2
    with pytest.raises(DataError, match=r"need 3 classes of at least 4 images .* 2 have that many \(short: 'c' \(2\)\)"):
        EpisodeBatchSampler(labels, list("abc"), ways=3, shots=1, queries=3, episodes=1, seed=0)


def test_fixed_batches_follow_the_sampled_episodes() -> None:
    labels = np.repeat(np.arange(5), 6)
    episodes = sample_episodes(labels, list("abcde"), 3, 2, 2, 4, seed=3)
    batches = fixed_episode_batches(episodes, 2, 2)
    for episode, batch in zip(episodes, batches):
        assert [i for i, _, role in batch if role == SUPPORT] == episode.support.tolist()
        assert [i for i, _, role in batch if role == QUERY] == episode.query.tolist()
        assert [label for _, label, role in batch if role == QUERY] == [0, 0, 1, 1, 2, 2]


# -- ProtoNet's loss and its metric

def test_episode_scores_are_protonets_and_have_gradients_on_a_prototype() -> None:
    torch.manual_seed(0)
    features = torch.randn(3 * 5, 8)
    targets = torch.tensor([[label, SUPPORT if k < 2 else QUERY] for label in range(3) for k in range(5)])
    scores, truth = episode_scores(features, targets)
    support, query = targets[:, 1] == SUPPORT, targets[:, 1] == QUERY
    expected = protonet(features[support], targets[support, 0], features[query], 3)
    assert torch.allclose(scores, expected, atol=1e-4)
    assert truth.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # a one-shot query identical to its support image: squared distance 0, yet a finite gradient
    same = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, -1.0], [3.0, 0.5]], requires_grad=True)
    roles = torch.tensor([[0, SUPPORT], [0, QUERY], [1, SUPPORT], [1, QUERY]])
    scores, truth = episode_scores(same, roles)
    torch.nn.functional.cross_entropy(scores, truth).backward()
    assert same.grad is not None and torch.isfinite(same.grad).all()


def test_query_accuracy_counts_queries_over_episodes() -> None:
    metric = QueryAccuracy()
    metric.update((torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0])))
    metric.update((torch.tensor([[0.0, 3.0], [1.0, 0.0], [5.0, 1.0]]), torch.tensor([1, 0, 1])))
    assert float(metric.compute()) == pytest.approx(3 / 5)


# -- splits by class

def test_plain_class_folders_hold_out_whole_classes(patterns: Path) -> None:
    splits = discover_class_splits(patterns, val_split=0.25, test_split=0.25, seed=0)
    train, val, test = ({splits.classes[y] for _, y in splits.split(name)} for name in ("train", "val", "test"))
    assert len(train) == 8 and len(val) == 4 and len(test) == 4 and not (train & val or train & test or val & test)
    assert splits.classes == sorted(train) + sorted(val) + sorted(test)
    assert all(len([1 for _, y in splits.val if splits.classes[y] == name]) == 8 for name in val)  # all its images
    assert discover_class_splits(patterns, 0.25, 0.25, seed=0).to_dict() == splits.to_dict()


def test_split_folders_keep_their_classes_and_may_not_share_one(tmp_path: Path) -> None:
    write_pattern_classes(tmp_path / "data" / "train", 4, 3)
    write_pattern_classes(tmp_path / "data" / "val", 2, 3, seed=1)
    for k in range(2):  # val/ classes renamed so that they differ from train/'s
        (tmp_path / "data" / "val" / f"c{k:02d}").rename(tmp_path / "data" / "val" / f"v{k}")
    splits = discover_class_splits(tmp_path / "data")
    assert splits.classes == ["c00", "c01", "c02", "c03", "v0", "v1"] and len(splits.val) == 6 and not splits.test
    (tmp_path / "data" / "val" / "v0").rename(tmp_path / "data" / "val" / "c02")
    with pytest.raises(DataError, match=r"c02 of .* are in both train and val: few-shot splits hold different classes"):
        discover_class_splits(tmp_path / "data")


# -- BatchNorm statistics at evaluation

def test_transductive_batchnorm_uses_the_episode_and_leaves_the_network_alone() -> None:
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6)).eval()
    network[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    episodic = with_batch_statistics(network)
    batch = torch.randn(10, 4) * 3 + 1
    out = episodic(batch)
    assert torch.allclose(out.mean(0), network[1].bias, atol=1e-5)  # normalised by the batch's own mean
    assert not torch.allclose(episodic(batch[:5]), out[:5])  # the same images in another episode: other features
    assert all(torch.equal(value, before[key]) for key, value in network.state_dict().items())
    assert not network.training and not episodic.training


# -- the whole path

FIT = ["--task", "fewshot", "--backbone", "conv4", "--weights", "none", "--image-size", "28", "--augment", "none",
       "--ways", "3", "--shots", "1,2", "--queries", "3", "--episodes", "30", "--train-ways", "4", "--train-shots",
       "2", "--episodes-per-epoch", "15", "--epochs", "3", "--lr", "3e-3", "--val-split", "0.25", "--test-split",
       "0.25", "--num-workers", "0", "--accelerator", "cpu", "--no-progress"]


def test_meta_training_from_the_cli_evaluates_held_out_classes(patterns: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    code, lines = run_cli(["fit", str(patterns), *FIT, "--out", str(run)])
    assert code == 0, lines
    history = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
    assert history[0][:5] == ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"] and len(history) == 4
    assert float(history[-1][1]) < float(history[1][1])  # the episode loss falls
    metrics = json.loads((run / "metrics.json").read_text())
    splits = json.loads((run / "splits.json").read_text())
    test_classes = {splits["classes"][y] for _, y in splits["test"]}
    assert metrics["split"] == "test" and metrics["num_classes"] == len(test_classes) == 4
    assert [(row["method"], row["shots"], row["episodes"]) for row in metrics["results"]] == \
        [("protonet", 1, 30), ("protonet", 2, 30)]
    assert metrics["bn_stats"] == "eval" and metrics["accuracy"] > 0.6  # chance: 1/3
    # the head is every class's prototype: 2c and -|c|^2
    tensors = load_file(run / "model.safetensors")
    weight, bias = tensors["head.weight"], tensors["head.bias"]
    assert weight.shape[0] == 16 and torch.allclose(bias, -(weight / 2).pow(2).sum(1), atol=1e-4)
    page = (run / "report.html").read_text()
    assert all(f'id="{section}"' in page for section in ("summary", "data", "curves", "per-class", "confusion"))
    # predict classifies among the run's classes; evaluate on other data runs episodes of all its classes
    code, lines = run_cli(["predict", str(run), str(patterns / "c05"), "--out", str(tmp_path / "p.csv")])
    assert code == 0, lines
    predicted = [row.split(",")[1] for row in (tmp_path / "p.csv").read_text().splitlines()[1:]]
    assert predicted.count("c05") >= 6
    external = cvtransfer.evaluate(run, patterns)
    assert external["split"] == "data" and external["num_classes"] == 16 and external["accuracy"] > 0.6
    # fewshot-eval of the run's backbone refuses its training classes, takes its held-out ones
    held = tmp_path / "held.txt"
    held.write_text("\n".join(sorted(test_classes)) + "\n")
    eval_args = ["fewshot-eval", str(patterns), "--backbone", "conv4", "--weights", str(run), "--ways", "3",
                 "--shots", "2", "--queries", "3", "--episodes", "30", "--fewshot-methods", "protonet",
                 "--num-workers", "0", "--accelerator", "cpu"]
    code, lines = run_cli([*eval_args, "--out", str(tmp_path / "all")])
    assert code == 2 and len(lines) == 1 and "were training classes of" in lines[0]
    code, lines = run_cli([*eval_args, "--classes-file", str(held), "--out", str(tmp_path / "held")])
    assert code == 0, lines
    saved = json.loads((tmp_path / "held" / "fewshot.json").read_text())
    # the same episodes, features from the run folder: fewshot-eval agrees with the run's own evaluation
    assert saved["results"][0]["accuracy"] == pytest.approx(metrics["results"][1]["accuracy"], abs=1e-6)


def test_transductive_batchnorm_is_asked_for_and_recorded(tmp_path: Path) -> None:
    options = {"data": str(write_shifted_colours(tmp_path / "data")), "task": "fewshot", "backbone": "conv4", "weights": "none", "image_size": 28,
               "augment": "none", "ways": 3, "shots": "1", "queries": 3, "episodes": 20, "train_ways": 4,
               "episodes_per_epoch": 1, "epochs": 1, "lr": 1e-8, "val_split": 0.25, "test_split": 0.25, "num_workers": 0,
               "accelerator": "cpu", "progress": False, "report": False}
    eval_stats = cvtransfer.fit(cvtransfer.Config(**options, out=str(tmp_path / "eval"))).metrics
    episodic = cvtransfer.fit(cvtransfer.Config(**options, bn_stats="transductive",
                                                out=str(tmp_path / "transductive"))).metrics
    assert (eval_stats["bn_stats"], episodic["bn_stats"]) == ("eval", "transductive")
    # the same weights (bn_stats changes only the evaluation; lr 1e-8 keeps the random ones, whose BatchNorm running
    # statistics saw one episode) on the same episodes: other features, other accuracy
    assert torch.equal(load_file(tmp_path / "eval" / "model.safetensors")["backbone.stem.0.weight"],
                       load_file(tmp_path / "transductive" / "model.safetensors")["backbone.stem.0.weight"])
    assert episodic["accuracy"] != eval_stats["accuracy"]


@pytest.mark.parametrize("backbone", ["resnet18", "tv/mobilenet_v3_small"])
def test_real_backbones_train_on_episodes(backbone: str, patterns: Path, tmp_path: Path) -> None:
    run = cvtransfer.fit(data=str(patterns), task="fewshot", backbone=backbone, weights="none", image_size=40,
                         augment="none", ways=3, shots="1", queries=2, episodes=5, train_ways=3, episodes_per_epoch=2,
                         epochs=1, val_split=0.25, num_workers=0, accelerator="cpu", progress=False, report=False,
                         out=str(tmp_path / "run"))
    assert run.metrics["split"] == "val" and run.metrics["episodes"] == 5 and len(run.history) == 1
    assert run.model.head.out_features == 16 and run.classes == json.loads((run.path / "classes.json").read_text())


@pytest.mark.parametrize(("extra", "expected"), [
    (["--train-ways", "12"], "training episodes need 12 classes of at least 5 images"),
    (["--strategy", "linear"], "--strategy linear trains only a head on cached features"),
    (["--mixup", "0.2"], "--mixup does not apply to --task fewshot"),
    (["--shots", "two"], "--shots 'two' is not a list of positive numbers"),
])
def test_refusals_are_one_line_and_leave_no_run_folder(extra: list[str], expected: str, patterns: Path,
                                                       tmp_path: Path) -> None:
    args = FIT + extra
    code, lines = run_cli(["fit", str(patterns), *args, "--out", str(tmp_path / "run")])
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_fewshot_options_are_refused_with_other_tasks(patterns: Path, tmp_path: Path) -> None:
    code, lines = run_cli(["fit", str(patterns), "--ways", "3", "--backbone", "tinycnn", "--weights", "none",
                           "--out", str(tmp_path / "run")])
    assert code == 2 and lines == ["error: --ways applies to --task fewshot only; add --task fewshot or leave it out"]


# -- fine-tuning head + last stage on the support images

def test_finetune_last_starts_as_cosine_prototypes_and_leaves_the_model_alone(patterns: Path) -> None:
    from cvtransfer.data.memory import ImageMemory
    from cvtransfer.few_shot.finetune import last_stage_tuner
    from cvtransfer.models.factory import build_model

    torch.manual_seed(0)
    built = build_model("resnet18", "none", 16, image_size=32)
    samples = [(str(path), 0) for path in sorted(patterns.rglob("*.png"))]
    images = ImageMemory("off", 0).dataset(samples, built.preprocessing, "none")
    before = {key: value.clone() for key, value in built.model.state_dict().items()}
    support, query = np.array([0, 1, 8, 9, 16, 17]), np.array([2, 3, 10, 11, 18, 19])  # classes c00, c01, c02
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    start = last_stage_tuner(built.model, images, torch.device("cpu"), steps=0)(support, labels, query, 3)
    with torch.no_grad():
        features = built.model.eval().embed(torch.stack([images[int(i)][0] for i in np.concatenate([support, query])]))
    # a cosine head from the prototypes: protonet_cosine's scores, times the head's scale
    assert torch.allclose(start, 10 * protonet_cosine(features[:6], labels, features[6:], 3), atol=1e-4)
    tuned = last_stage_tuner(built.model, images, torch.device("cpu"), steps=5)(support, labels, query, 3)
    assert not torch.allclose(tuned, start, atol=1e-4)
    assert all(torch.equal(value, before[key]) for key, value in built.model.state_dict().items())


def test_fewshot_eval_and_fewshot_fine_tune_on_the_support_images(patterns: Path, tmp_path: Path) -> None:
    result = cvtransfer.fewshot_eval(data=str(patterns), backbone="tinycnn", weights="none", image_size=28, ways=3,
                                     shots="2", queries=2, episodes=3, fewshot_methods="protonet,finetune_last",
                                     num_workers=0, accelerator="cpu", report=False, out=str(tmp_path / "eval"))
    assert [row["method"] for row in result.rows] == ["protonet", "finetune_last"]
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in result.rows)
    support = tmp_path / "support"
    for name in ("c00", "c05", "c10"):
        (support / name).mkdir(parents=True)
        for index in range(3):
            (support / name / f"{index}.png").write_bytes((patterns / name / f"{index}.png").read_bytes())
    rows = cvtransfer.fewshot(support, patterns / "c05", backbone="tinycnn", weights="none", image_size=28,
                              fewshot_methods="finetune_last", num_workers=0, accelerator="cpu")
    assert len(rows) == 8 and {row["label"] for row in rows} <= {"c00", "c05", "c10"}
