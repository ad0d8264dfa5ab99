"""A run's model.safetensors with a crafted or damaged header: one line and exit 2, nothing allocated."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from cvtransfer.models.weights import METADATA_KEY, MODEL_FILE
from tests.test_cli import run_cli


def _header(run: Path) -> tuple[dict, dict[str, Any]]:
    with safe_open(str(run / MODEL_FILE), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        return tensors, json.loads((handle.metadata() or {})[METADATA_KEY])


def _crafted(run: Path, tmp_path: Path, change: Any) -> Path:
    """A copy of ``run`` whose model header is ``change(metadata)`` (or the string ``change``)."""
    copy_ = tmp_path / "crafted"
    shutil.copytree(run, copy_)
    tensors, metadata = _header(run)
    text = change if isinstance(change, str) else json.dumps(change(copy.deepcopy(metadata)))
    save_file(tensors, str(copy_ / MODEL_FILE), metadata={METADATA_KEY: text})
    return copy_


def _set(path: str, value: Any) -> Any:
    def change(metadata: dict) -> dict:
        *parents, last = path.split(".")
        node = metadata
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        return metadata
    return change


def _drop(key: str) -> Any:
    def change(metadata: dict) -> dict:
        del metadata[key]
        return metadata
    return change


CRAFTED = {
    "huge input size": (_set("preprocessing.input_size", 10**6), "input_size"),
    "crop_pct 0": (_set("preprocessing.crop_pct", 0), "crop_pct"),
    "std 0": (_set("preprocessing.std", [0, 0, 0]), "std"),
    "mean not numbers": (_set("preprocessing.mean", "grey"), "mean"),
    "huge bottleneck": (_set("architecture.bottleneck_dim", 10**9), "bottleneck_dim"),
    "classes missing": (_drop("classes"), "'classes'"),
    "classes fewer than the head": (_set("classes", ["a"]), "head has 3 outputs"),
    "classes twice": (_set("classes", ["a", "a", "b"]), "twice"),
    "classes not names": (_set("classes", 3), "'classes'"),
    "invalid JSON": ("{not json", "not valid JSON"),
    "not an object": ("[1, 2]", "not a JSON object"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_header_is_one_line(case: str, finished_run: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    change, expected = CRAFTED[case]
    run = _crafted(finished_run, tmp_path, change)
    image = json.loads((finished_run / "splits.json").read_text())["test"][0][0]
    for command in (["predict", str(run), image], ["evaluate", str(run)]):
        code, _, err = run_cli(command, monkeypatch, capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, (command, err)
        assert len(lines) == 1 and str(run / MODEL_FILE) in lines[0] and expected in lines[0], lines


def test_a_crafted_file_is_refused_as_weights_too(finished_run: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    run = _crafted(finished_run, tmp_path, _set("architecture.bottleneck_dim", 10**9))
    data = Path(json.loads((finished_run / "splits.json").read_text())["train"][0][0]).parents[2]
    out = tmp_path / "again"
    code, _, err = run_cli(["fit", str(data), "--weights", str(run), "--out", str(out), "--backbone", "tinycnn",
                            "--epochs", "1", "--no-progress", "--no-report", "--accelerator", "cpu"], monkeypatch, capsys)
    assert code == 2 and "bottleneck_dim" in err and not out.exists()


def test_the_untouched_header_still_loads(finished_run: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    run = _crafted(finished_run, tmp_path, lambda metadata: metadata)
    code, out, _ = run_cli(["evaluate", str(run)], monkeypatch, capsys)
    assert code == 0 and out.startswith("test: accuracy")
