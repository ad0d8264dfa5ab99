"""cvtransfer: transfer learning for computer vision, from one command or a few lines of Python."""

from cvtransfer.api import auto, backbones, evaluate, fit, predict, rank, resume
from cvtransfer.config import Config
from cvtransfer.errors import ConfigError, CvTransferError, DataError, WeightsError
from cvtransfer.run import Run

__version__ = "0.1.0"

__all__ = [
    "Config", "ConfigError", "CvTransferError", "DataError", "Run", "WeightsError",
    "auto", "backbones", "evaluate", "fit", "predict", "rank", "resume",
]
