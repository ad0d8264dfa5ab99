"""Which process writes, and which device inference outside the Trainer uses."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only


def is_main_process() -> bool:
    """True on the process that writes the run folder (global rank 0 under torchrun/SLURM)."""
    return int(getattr(rank_zero_only, "rank", 0)) == 0


def pick_device(accelerator: str = "auto") -> torch.device:
    """The device for inference outside the Trainer (feature extraction, evaluation)."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if accelerator in ("auto", "mps") and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
