"""cvtransfer: transfer learning for computer vision, from one command or a few lines of Python."""

from cvtransfer import report  # the module, callable as the API's report(run_dir): see report.py
from cvtransfer.api import (
    adapt,
    auto,
    backbones,
    compare,
    convert,
    detect,
    evaluate,
    fewshot,
    fewshot_eval,
    fit,
    lr_find,
    predict,
    pretrained,
    rank,
    resume,
    segment,
    shift,
    zeroshot,
)
from cvtransfer.config import Config
from cvtransfer.errors import ConfigError, CvTransferError, DataError, WeightsError
from cvtransfer.run import Run

__version__ = "0.1.0"

__all__ = [
    "Config", "ConfigError", "CvTransferError", "DataError", "Run", "WeightsError",
    "adapt", "auto", "backbones", "compare", "convert", "detect", "evaluate", "fewshot", "fewshot_eval", "fit", "lr_find", "predict", "pretrained",
    "rank", "report", "resume", "segment", "shift", "zeroshot",
]
