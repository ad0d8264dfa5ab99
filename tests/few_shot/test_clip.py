"""CLIP through open_clip on a tiny randomly initialised model (no CLIP weights can be had here): the prompt
ensemble, the zero-shot head as a linear layer, the CLIP few-shot methods' limits, and the zeroshot command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.nn import functional as F

import cvtransfer
from cvtransfer.few_shot.methods import FEWSHOT_METHODS
from cvtransfer.models.clip import TINY_CLIP, create_clip, text_embeddings
from cvtransfer.workflows.zeroshot import DEFAULT_TEMPLATES, zero_shot_model
from tests.conftest import write_class_images
from tests.test_bad_inputs import run_cli

CLIP = "clip:" + TINY_CLIP
NAMES = ["red square", "green square", "blue square"]
TEMPLATES = ["a photo of a {}.", "a drawing of the {}.", "{}"]


@pytest.fixture(scope="module")
def clip() -> cvtransfer.models.clip.ClipModel:  # type: ignore[name-defined]
    torch.manual_seed(0)
    return create_clip(CLIP, "none")


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clip") / "data"
    write_class_images(root, {"red_square": 6, "green_square": 6, "blue_square": 6}, size=32)
    return root


def test_the_default_templates_are_open_clips_ensemble() -> None:
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    assert list(DEFAULT_TEMPLATES) == [template("{}") for template in SIMPLE_IMAGENET_TEMPLATES]


def test_text_embeddings_normalise_each_prompt_then_average_then_normalise(clip) -> None:  # type: ignore[no-untyped-def]
    rows = text_embeddings(clip, NAMES, TEMPLATES)
    with torch.no_grad():
        prompts = clip.model.encode_text(clip.tokenizer([t.format(n) for n in NAMES for t in TEMPLATES]))
    prompts = prompts.view(len(NAMES), len(TEMPLATES), -1)
    expected = F.normalize(F.normalize(prompts, dim=-1).mean(dim=1), dim=-1)
    assert rows.shape == (3, clip.model.text_projection.shape[1]) and torch.allclose(rows, expected, atol=1e-5)
    # the order matters: averaging the raw embeddings first gives another classifier
    assert not torch.allclose(rows, F.normalize(prompts.mean(dim=1), dim=-1), atol=1e-4)


def test_the_zero_shot_head_is_clips_logits_as_a_linear_layer(clip) -> None:  # type: ignore[no-untyped-def]
    model = zero_shot_model(clip, NAMES, TEMPLATES)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        image = F.normalize(clip.model.encode_image(images), dim=-1)
        expected = clip.model.logit_scale.exp() * image @ text_embeddings(clip, NAMES, TEMPLATES).T
        assert torch.allclose(model(images), expected, atol=1e-4)
    assert torch.equal(model.head.bias, torch.zeros(3))


def test_clip_methods_at_their_limits() -> None:
    torch.manual_seed(1)
    support, query = F.normalize(torch.randn(6, 16), dim=1), F.normalize(torch.randn(9, 16), dim=1)
    labels, text = torch.tensor([0, 0, 1, 1, 2, 2]), 20 * F.normalize(torch.randn(3, 16), dim=1)
    zero = FEWSHOT_METHODS.get("zeroshot")(support, labels, query, 3, text=text)
    assert torch.allclose(zero, query @ text.T)
    wise = FEWSHOT_METHODS.get("wiseft")
    at = {alpha: wise(support, labels, query, 3, text=text, wise_alpha=alpha) for alpha in (0.0, 0.5, 1.0)}
    assert torch.allclose(at[0.0], zero, atol=1e-6) and not torch.allclose(at[1.0], zero, atol=1e-3)
    assert torch.allclose(at[0.5], (at[0.0] + at[1.0]) / 2, atol=1e-5)  # weights interpolated: scores too
    for name in ("tip_adapter", "tip_adapter_f"):
        tip = FEWSHOT_METHODS.get(name)
        assert torch.allclose(tip(support, labels, query, 3, text=text, tip_alpha=0.0), zero, atol=1e-6), name
        assert not torch.allclose(tip(support, labels, query, 3, text=text, tip_alpha=1.0), zero, atol=1e-3), name
    # the training-free cache: a query equal to a support image gets exp(0) = 1 from it
    cache = FEWSHOT_METHODS.get("tip_adapter")(support, labels, support[:1], 3, text=text, tip_beta=1e3) - \
        support[:1] @ text.T
    assert cache[0].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)


def test_zeroshot_writes_a_run_folder_that_predicts_evaluates_and_fine_tunes(colours: Path, tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("a photo of a {}.\n\na {} on a grey background\n")
    run_dir = tmp_path / "zs"
    code, lines = run_cli(["zeroshot", str(colours), "--backbone", CLIP, "--weights", "none", "--templates",
                           str(tmp_path / "prompts.txt"), "--classes", "blue,green,red", "--out", str(run_dir),
                           "--num-workers", "0", "--accelerator", "cpu"])
    assert code == 0, lines
    saved = json.loads((run_dir / "zeroshot.json").read_text())
    assert saved["templates"] == ["a photo of a {}.", "a {} on a grey background"]
    assert saved["prompts"] == {"blue_square": "blue", "green_square": "green", "red_square": "red"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_samples"] == 18 and 0.0 <= metrics["accuracy"] <= 1.0
    assert "zero-shot (2 prompt templates)" in (run_dir / "report.html").read_text()
    # the head is the prompts' ensemble: the same model rebuilt from the folder scores as the tiny CLIP does
    run = cvtransfer.Run(run_dir)
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = run.model.eval()(images)
    assert logits.shape == (2, 3) and torch.allclose(logits.softmax(1).sum(1), torch.ones(2))
    rows = cvtransfer.predict(run_dir, [colours / "red_square"])
    assert len(rows) == 6 and {row["label"] for row in rows} <= {"red_square", "green_square", "blue_square"}
    # fine-tuning from the zero-shot run keeps its head (same classes) and trains the image tower
    tuned = cvtransfer.fit(data=str(colours), backbone=CLIP, weights=str(run_dir), epochs=1, batch_size=6,
                           num_workers=0, accelerator="cpu", progress=False, report=False, out=str(tmp_path / "ft"))
    assert tuned.model.head.weight.shape == (3, 64) and len(tuned.history) == 1


def test_clip_weights_from_a_file_give_the_same_zero_shot_model(clip, colours: Path,  # type: ignore[no-untyped-def]
                                                                tmp_path: Path) -> None:
    file = tmp_path / "tiny_clip.safetensors"
    save_file({key: value.contiguous() for key, value in clip.model.state_dict().items()}, str(file))
    loaded = create_clip(CLIP, str(file))
    assert loaded.weights_source == f"file:{file}"
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(zero_shot_model(loaded, NAMES, TEMPLATES)(images),
                              zero_shot_model(clip, NAMES, TEMPLATES)(images), atol=1e-5)
    # a linear probe on CLIP features goes through the feature cache like any backbone
    probe = cvtransfer.fit(data=str(colours), backbone=CLIP, weights=str(file), strategy="linear", num_workers=0,
                           accelerator="cpu", progress=False, report=False, cache_dir=str(tmp_path / "cache"),
                           out=str(tmp_path / "probe"))
    assert probe.metrics["num_samples"] > 0 and any((tmp_path / "cache").rglob("*.safetensors"))


def test_fewshot_eval_runs_the_clip_methods(colours: Path, tmp_path: Path) -> None:
    result = cvtransfer.fewshot_eval(data=str(colours), backbone=CLIP, weights="none", ways=3, shots="1,2", queries=2,
                                     episodes=10, fewshot_methods="zeroshot,protonet,wiseft,tip_adapter,tip_adapter_f",
                                     num_workers=0, accelerator="cpu", report=False, out=str(tmp_path / "eval"))
    assert [(row["method"], row["shots"]) for row in result.rows][:5] == [
        ("zeroshot", 1), ("protonet", 1), ("wiseft", 1), ("tip_adapter", 1), ("tip_adapter_f", 1)]
    assert all(0.0 <= row["accuracy"] <= 1.0 and row["episodes"] == 10 for row in result.rows)


@pytest.mark.parametrize(("args", "expected"), [
    (["--backbone", "resnet18"], "zeroshot needs an image-text model: --backbone clip:NAME"),
    (["--backbone", "clip:ViT-B-32", "--weights", "openai"], "cannot download the open_clip weights 'openai' of ViT-B-32"),
    (["--backbone", "clip:ViT-B-32", "--weights", "imagenet"], "--weights imagenet does not apply to --backbone clip:"),
    (["--backbone", "clip:ViT-B-32", "--weights", "nonsense"], "--weights nonsense is not an open_clip tag of ViT-B-32"),
    (["--backbone", "clip:no-such-model"], "CLIP model 'no-such-model'"),
    (["--backbone", CLIP, "--weights", "none", "--classes", "red,green"], "--classes gives 2 names for 3 classes"),
    (["--backbone", CLIP, "--weights", "none", "--templates", "TEMPLATES"], "every line needs one {} where the class"),
])
def test_zeroshot_refusals_are_one_line_and_leave_no_run_folder(args: list[str], expected: str, colours: Path,
                                                                tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("a photo of a {}\nno placeholder here\n")
    args = [str(tmp_path / "bad.txt") if arg == "TEMPLATES" else arg for arg in args]
    code, lines = run_cli(["zeroshot", str(colours), *args, "--out", str(tmp_path / "zs")])
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "zs").exists()


def test_the_clip_methods_need_a_clip_backbone(colours: Path, tmp_path: Path) -> None:
    code, lines = run_cli(["fewshot-eval", str(colours), "--backbone", "tinycnn", "--weights", "none", "--ways", "3",
                           "--shots", "1", "--queries", "2", "--episodes", "3", "--fewshot-methods", "protonet,tip_adapter",
                           "--out", str(tmp_path / "eval")])
    assert code == 2 and lines == ["error: --fewshot-methods tip_adapter read CLIP's text embeddings: use a --backbone "
                                   "clip:NAME"]
