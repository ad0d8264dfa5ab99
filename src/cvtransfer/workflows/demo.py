"""``cvtransfer demo``: pretrain on real digits, transfer to shifted digits with few labels.

Every step goes through the public API, as a user would write it: a backbone is pretrained on
the source domain and saved (``model.safetensors``), then the target is trained from scratch and
with three transfer strategies, and the target test accuracies are compared.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from cvtransfer.comparison import write_comparison
from cvtransfer.config import Config
from cvtransfer.data.demo import make_demo_domains
from cvtransfer.engine.commands import fit_run
from cvtransfer.report import write_report

log = logging.getLogger(__name__)

BACKBONE = "tinycnn"
PRETRAIN = dict(epochs=12, lr=3e-3, batch_size=64, augment="none", val_split=0.1)
TRANSFER = dict(epochs=20, lr=3e-3, batch_size=32, augment="none", scheduler="cosine")
STRATEGIES = (
    ("scratch", dict(strategy="full", weights="none")),
    ("linear", dict(strategy="linear", lr=5e-2, epochs=60)),  # an epoch costs only the head
    ("full", dict(strategy="full")),
    ("l2sp", dict(strategy="l2sp")),
)


def run_demo(out: str | Path = "demo_run", progress: bool = False, epochs_scale: float = 1.0,
             report: bool = True) -> list[dict[str, Any]]:
    """Run the demo into ``out`` (replaced if it exists); one row per strategy with accuracy and time.

    ``report``: also write each target run's report.html and ``out/compare.html`` (after the timing).
    """
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    domains = make_demo_domains(out / "data")
    log.info("demo data in %s: source %s, target %s", out / "data", domains["source"], domains["target"])

    def scaled(options: dict[str, Any]) -> dict[str, Any]:
        return {**options, "epochs": max(1, round(options["epochs"] * epochs_scale))}

    start = time.perf_counter()
    source = fit_run(Config(data=str(domains["source"]), backbone=BACKBONE, weights="none", progress=progress,
                            out=str(out / "source"), report=False, **scaled(PRETRAIN)))
    log.info("source model: accuracy %.3f on source val in %.1fs", source.metrics["accuracy"],
             time.perf_counter() - start)
    rows = []
    for name, options in STRATEGIES:
        settings = scaled({**TRANSFER, "weights": str(source.path / "model.safetensors"), **options})
        start = time.perf_counter()
        run = fit_run(Config(data=str(domains["target"]), backbone=BACKBONE, progress=progress,
                             out=str(out / name), report=False, **settings))
        rows.append({"strategy": name, "accuracy": run.metrics["accuracy"],
                     "seconds": time.perf_counter() - start, "run": str(run.path)})
        log.info("%s: target test accuracy %.3f", name, run.metrics["accuracy"])
    if report:
        for row in rows:
            write_report(row["run"])
        write_comparison([row["run"] for row in rows], out / "compare.html")
    return rows
