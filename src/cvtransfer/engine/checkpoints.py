"""Checkpoints written atomically and read safely; the exported model as safetensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO
from safetensors.torch import save_file
from torch import nn

from cvtransfer.errors import WeightsError
from cvtransfer.io import atomic_path
from cvtransfer.models.weights import METADATA_KEY


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file in the same folder, then renamed.

    Lightning's own writer goes through an fsspec transaction whose temporary file may live on
    another file system, where the final move is a copy; a rename in one folder is atomic. Loading
    always uses ``weights_only=True``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: _PATH, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint(path, map_location)


def load_checkpoint(path: _PATH, map_location: Any | None = "cpu") -> dict[str, Any]:
    """Read a Lightning checkpoint without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # torch raises several types for a bad file
        raise WeightsError(f"checkpoint {path} cannot be read safely: {str(err).splitlines()[0][:200]}") from None


def network_state(checkpoint: dict[str, Any], prefix: str = "network.") -> dict[str, torch.Tensor]:
    """The trained network's tensors from a TransferModule checkpoint."""
    return {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def save_model(model: nn.Module, path: str | Path, metadata: dict[str, Any]) -> None:
    """Write ``model``'s tensors as safetensors with cvtransfer metadata (backbone, classes, preprocessing)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)})
