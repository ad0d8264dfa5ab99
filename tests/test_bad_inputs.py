"""Property-style: odd values for every option of the commands give a finished run (exit 0) or one line
and exit 2 with no folder left behind; never a traceback, never a hang.

The cases are a seeded sample of (option, value) pairs over every Config field a command takes (NaN,
infinities, negatives, huge numbers, empty strings, words where numbers go), plus odd arguments to
the commands that read run folders. Each runs the real CLI in-process under a 60 s alarm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import random
import signal
import sys
from pathlib import Path

import pytest

from cvtransfer import cli
from cvtransfer.config import Config
from tests.conftest import write_split_folders

ODD = ["nan", "inf", "-inf", "-1", "0", "1e12", "99999999999999999999", "", "abc", "1,2", "0.5"]
FIT = ["--backbone", "tinycnn", "--weights", "none", "--image-size", "16", "--epochs", "1", "--batch-size", "4",
       "--no-progress", "--no-report", "--accelerator", "cpu", "--num-workers", "0"]
# Options whose odd values are about other commands (adapt, rank, auto) or that point to files.
NOT_FIT = {"data", "out", "target", "target_test", "cache_dir", "backbones", "budget", "validate", "rank_by",
           "tiny_per_class", "small_per_class", "small_images", "method", "trade_off", "mcc", "bottleneck_dim",
           "iters_per_epoch", "discriminator_dim", "source_epochs", "select_by", "selection_samples", "mlp_dim",
           "shift_samples", "jan_sigma"}
BOOLEAN = {f.name for f in dataclasses.fields(Config) if isinstance(f.default, bool)}


def fit_cases() -> list[tuple[str, str]]:
    names = sorted(f.name for f in dataclasses.fields(Config) if f.name not in NOT_FIT | BOOLEAN)
    every = [(name, value) for name in names for value in ODD]
    return sorted(random.Random(0).sample(every, 60))


class Hung(Exception):
    pass


def run_cli(args: list[str]) -> tuple[int | str, list[str]]:
    """Exit status (or what escaped) and the non-empty stderr lines of ``cvtransfer ARGS``."""
    def hung(*_: object) -> None:
        raise Hung()

    previous = signal.signal(signal.SIGALRM, hung)
    err = io.StringIO()
    code: int | str = 0
    sys.argv = ["cvtransfer", *args]
    signal.alarm(60)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            cli.main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    except Hung:
        code = "hung"
    except BaseException as escaped:  # a traceback
        code = f"{type(escaped).__name__}: {escaped}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


def finished_or_refused(code: int | str, lines: list[str], out: Path,
                        made: tuple[str, ...] = ("model.safetensors", "metrics.json")) -> None:
    """Exit 0 with the command's files in ``out``, or exit 2, one error line and no ``out`` left behind."""
    if code == 0:
        assert all((out / name).is_file() for name in made), lines[-5:]
    else:
        assert code == 2, (code, lines[-5:])
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        assert not out.exists()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_split_folders(tmp_path_factory.mktemp("odd") / "data", 4, 2, 2)


@pytest.mark.parametrize(("option", "value"), fit_cases())
def test_fit_with_an_odd_value(option: str, value: str, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, lines = run_cli(["fit", str(data), "--out", str(out), *FIT, "--" + option.replace("_", "-"), value])
    finished_or_refused(code, lines, out)


@pytest.mark.parametrize("args", [
    ["evaluate", "{tmp}/no-run"], ["predict", "{tmp}/no-run", "{tmp}"], ["report", "{tmp}/no-run"],
    ["compare", "{tmp}/no-run"], ["evaluate", "{data}"], ["predict", "{data}", "{data}", "--top-k", "0"],
    ["predict", "{data}", "{data}", "--top-k", "x"], ["fit", "{tmp}/missing", "--epochs", "1"],
    ["fit", "{data}", "--resume", "{tmp}/no-run"], ["lr-find", "{data}", "--steps", "0"],
    ["lr-find", "{data}", "--min-lr", "nan"], ["rank", "{data}", "--rank-by", "acc"],
    ["adapt", "--source", "{data}", "--target", "{tmp}/missing"], ["adapt", "--source", "{data}"],
    ["adapt", "--source", "{data}", "--target", "{data}", "--method", "l2sp"],
    ["shift", "{data}", "{tmp}/missing"], ["fit", "{data}", "--config", "{tmp}/missing.yaml"],
    ["fit", "{data}", "--loss", "dann:x"], ["backbones", "[[["],
])
def test_other_commands_with_odd_arguments(args: list[str], data: Path, tmp_path: Path) -> None:
    filled = [arg.format(tmp=tmp_path, data=data) for arg in args]
    code, lines = run_cli([*filled, "--no-progress"] if args[0] in ("fit", "lr-find") else filled)
    assert code in (0, 2), (code, lines[-5:])
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
