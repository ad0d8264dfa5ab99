"""The command line: every command, config precedence, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cvtransfer import cli

TINY = ["--backbone", "tinycnn", "--weights", "none", "--image-size", "16", "--epochs", "2", "--batch-size", "8",
        "--no-progress", "--accelerator", "cpu", "--num-workers", "0", "--augment", "none", "--no-report"]


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["cvtransfer", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fit_evaluate_predict(split_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    code, out, _ = run_cli(["fit", str(split_dir), *TINY, "--strategy", "partial", "--freeze", "1",
                            "--out", str(run)], monkeypatch, capsys)
    assert code == 0 and f"run folder: {run}" in out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["strategy"] == "partial" and saved["freeze"] == 1 and saved["progress"] is False
    code, out, _ = run_cli(["evaluate", str(run)], monkeypatch, capsys)
    assert code == 0 and out.startswith("test: accuracy")
    code, out, _ = run_cli(["predict", str(run), str(split_dir / "test" / "b"), "--out", str(tmp_path / "p.csv"),
                            "--top-k", "3"], monkeypatch, capsys)
    assert code == 0 and "4 predictions" in out
    assert (tmp_path / "p.csv").read_text().count("\n") == 5


def test_config_file_then_command_line_overrides(split_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"backbone": "tinycnn", "weights": "none", "image_size": 16, "epochs": 1,
                                      "batch_size": 8, "progress": False, "lr": 0.5, "num_workers": 0}))
    code, _, _ = run_cli(["fit", str(split_dir), "--config", str(config), "--lr", "0.01", "--out",
                          str(tmp_path / "run")], monkeypatch, capsys)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert code == 0 and saved["lr"] == 0.01 and saved["epochs"] == 1


def test_resume_from_the_command_line(split_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    run_cli(["fit", str(split_dir), *TINY, "--out", str(run)], monkeypatch, capsys)
    code, _, _ = run_cli(["fit", "--resume", str(run), "--epochs", "3"], monkeypatch, capsys)
    assert code == 0
    assert len((run / "history.csv").read_text().strip().splitlines()) == 1 + 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "{tmp}/missing", "--out", "{tmp}/r"], "error: data path {tmp}/missing does not exist"),
        (["fit", "{data}", "--strategy", "fulll", "--backbone", "tinycnn", "--weights", "none", "--out", "{tmp}/r"],
         "error: unknown strategy 'fulll': did you mean full?"),
        (["fit", "{data}", "--val-split", "2", "--out", "{tmp}/r"], "error: --val-split must be between 0.0 and 0.9"),
        (["fit", "{data}", "--backbone", "tinycnn", "--weights", "{tmp}/nope.pth", "--out", "{tmp}/r"],
         "error: weights file {tmp}/nope.pth does not exist"),
        (["evaluate", "{tmp}"], "is not a cvtransfer run folder"),
        (["fit", "{data}", "--resume", "{tmp}"], "error: --resume {tmp} continues that run on its own data"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str, split_dir: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    filled = [a.format(tmp=tmp_path, data=split_dir) for a in args]
    code, _, err = run_cli(filled, monkeypatch, capsys)
    assert code == 2
    assert message.format(tmp=tmp_path) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_wrong_class_set_on_evaluate(split_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture) -> None:
    run_cli(["fit", str(split_dir), *TINY, "--epochs", "1", "--out", str(tmp_path / "run")], monkeypatch, capsys)
    from tests.conftest import write_class_images

    write_class_images(tmp_path / "other", {"a": 2, "zebra": 2})
    code, _, err = run_cli(["evaluate", str(tmp_path / "run"), str(tmp_path / "other")], monkeypatch, capsys)
    assert code == 2 and "not trained on: zebra" in err


def test_backbones_lists_names_with_sizes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(["backbones", "convnext_t*"], monkeypatch, capsys)
    assert code == 0 and "convnext_tiny" in out and "27.82M    224" in out
    code, out, _ = run_cli(["backbones"], monkeypatch, capsys)
    assert "vit_small_patch16_224" in out and "tv/resnet50" in out


def test_lr_find_writes_plot_and_suggestion(split_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(["lr-find", str(split_dir), *TINY, "--steps", "20", "--out", str(tmp_path / "lr")],
                           monkeypatch, capsys)
    assert code == 0 and "suggested lr" in out
    result = json.loads((tmp_path / "lr" / "lr_find.json").read_text())
    assert len(result["lrs"]) == 20 and result["lrs"][0] < result["lrs"][-1]
    assert (tmp_path / "lr" / "lr_find.png").stat().st_size > 1000


def test_predict_and_evaluate_take_max_image_pixels(finished_run: Path, split_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    images = str(split_dir / "test" / "a")  # 20x20 = 400 pixels each
    code, _, err = run_cli(["predict", str(finished_run), images, "--out", str(tmp_path / "p.csv"),
                            "--max-image-pixels", "100"], monkeypatch, capsys)
    assert code == 2 and "no readable images" in err
    assert "raise --max-image-pixels" in caplog.text  # the advice names an option predict has
    code, out, err = run_cli(["predict", str(finished_run), images, "--out", str(tmp_path / "p.csv"),
                              "--max-image-pixels", "1000"], monkeypatch, capsys)
    assert code == 0 and "4 predictions" in out, err
    code, _, err = run_cli(["evaluate", str(finished_run), str(split_dir), "--out", str(tmp_path / "m.json"),
                            "--max-image-pixels", "100"], monkeypatch, capsys)
    assert code == 2 and err.startswith("error:")


@pytest.mark.parametrize("command", ["fit", "adapt", "auto", "lr-find"])
def test_help_shows_every_default(command: str, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    code, out, _ = run_cli([command, "--help"], monkeypatch, capsys)
    assert code == 0
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ --")}
    assert "[default: 0.2]" in lines["--val-split"] and "[default: 32]" in lines["--batch-size"]
    assert "[default: --progress]" in lines["--progress"] and "[default: none]" in lines["--out"]
    missing = [flag for flag, line in lines.items() if "[default:" not in line and flag not in ("--help", "--config",
                                                                                           "--resume", "--source")]
    assert not missing


def test_version(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from importlib.metadata import version

    code, out, _ = run_cli(["--version"], monkeypatch, capsys)
    assert code == 0 and out.strip() == f"cvtransfer {version('cvtransfer')}"


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "cvtransfer", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "fit" in result.stdout and "lr-find" in result.stdout


def test_ctrl_c_keeps_finished_epochs_and_resume_finishes(split_dir: Path, tmp_path: Path) -> None:
    import signal
    import time

    run = tmp_path / "run"
    args = [sys.executable, "-m", "cvtransfer", "fit", str(split_dir), *TINY, "--epochs", "400", "--out", str(run)]
    # Ctrl-C as in a terminal: a test run started in the background (nohup ... &) ignores SIGINT, and a child
    # inherits that, so the child gets SIGINT's default disposition back first
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300  # generous: CI machines may be loaded
    while not (run / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130
    assert f"cvtransfer fit --resume {run}" in err
    done = len((run / "history.csv").read_text().strip().splitlines()) - 1
    assert 1 <= done < 400
    result = subprocess.run([sys.executable, "-m", "cvtransfer", "fit", "--resume", str(run), "--epochs",
                             str(done + 1)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len((run / "history.csv").read_text().strip().splitlines()) - 1 == done + 1
    assert (run / "model.safetensors").is_file()


def test_fit_writes_a_report_and_report_rewrites_it(split_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    args = [a for a in TINY if a != "--no-report"]
    code, _, _ = run_cli(["fit", str(split_dir), *args, "--epochs", "1", "--out", str(run)], monkeypatch, capsys)
    assert code == 0 and '<section id="grad-cam">' in (run / "report.html").read_text()
    (run / "report.html").unlink()
    code, out, _ = run_cli(["report", str(run)], monkeypatch, capsys)
    assert code == 0 and out.strip() == f"report: {run / 'report.html'}" and (run / "report.html").is_file()
    code, out, _ = run_cli(["compare", str(run), str(run), "--out", str(tmp_path / "c.html")], monkeypatch, capsys)
    assert code == 0 and "comparison of 2 runs" in out and (tmp_path / "c.html").is_file()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_report_and_compare_errors_are_one_line(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli([command, str(tmp_path / "nowhere")], monkeypatch, capsys)
    assert code == 2 and err == f"error: run folder {tmp_path / 'nowhere'} does not exist\n"
