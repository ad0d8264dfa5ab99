"""The one exception type users see: a clear, one-line message naming the input and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CvTransferError(Exception):
    """An error the user can fix; the CLI prints its message on one line and exits non-zero."""


class ConfigError(CvTransferError):
    """An option or config file value is invalid."""


class TrainingDiverged(CvTransferError):
    """The loss became NaN or infinite: the run stops, keeping its last good checkpoint."""


class DataError(CvTransferError):
    """The dataset cannot be used as given (missing folder, empty class, unreadable file...)."""


class DiskFull(CvTransferError):
    """A file could not be written for lack of space: earlier files are intact."""


class WeightsError(CvTransferError):
    """Weights cannot be found, downloaded or loaded."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> ConfigError:
    """Build the error for an unknown registry name, listing the closest valid ones."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"choose one of: {', '.join(valid)}"
    return ConfigError(f"unknown {kind} '{name}': {hint}")
