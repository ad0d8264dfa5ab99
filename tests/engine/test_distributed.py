"""DDP through Lightning (launched by torchrun, as on a cluster): gradual thawing keeps replicas in sync."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, sys
import lightning.pytorch as pl
import torch
import cvtransfer

class Probe(pl.Callback):
    def __init__(self):
        self.frozen = []

    def on_train_start(self, trainer, module):
        self.start = float(torch.cat([p.detach().flatten() for p in module.network.backbone.parameters()]).double().sum())

    def on_train_epoch_start(self, trainer, module):
        self.frozen.append(sorted(module.network.frozen_groups))

    def on_train_end(self, trainer, module):
        backbone = float(torch.cat([p.detach().flatten() for p in module.network.backbone.parameters()]).double().sum())
        total = torch.cat([p.detach().flatten() for p in module.network.parameters()]).double().sum()
        sums = trainer.strategy.all_gather(total.reshape(1)).flatten().tolist()
        if trainer.is_global_zero:
            json.dump({"checksums": sums, "frozen": self.frozen, "world": trainer.world_size,
                       "backbone_moved": backbone != self.start}, open(sys.argv[3], "w"))

config = cvtransfer.Config(data=sys.argv[1], out=sys.argv[2], backbone="tinycnn", weights="none", image_size=16,
                           epochs=3, batch_size=4, strategy="gradual", freeze_epochs=1, unfreeze_every=1,
                           accelerator="cpu", devices="2", distributed="ddp", progress=False, num_workers=0)
cvtransfer.fit(config, callbacks=[Probe()])
"""


def test_gradual_unfreezing_under_ddp_keeps_replicas_identical(split_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(split_dir),
         str(tmp_path / "run"), str(report)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(report.read_text())
    assert seen["world"] == 2
    assert seen["frozen"] == [[0, 1, 2, 3], [0, 1, 2], [0, 1]]
    assert seen["backbone_moved"]  # thawed groups trained
    assert seen["checksums"][0] == seen["checksums"][1]  # ... with gradients all-reduced on both ranks
    assert (tmp_path / "run" / "model.safetensors").is_file()
