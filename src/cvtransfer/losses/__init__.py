"""Domain adaptation: one loss module per method, registered by name in ``DA_METHODS``."""

from cvtransfer.losses import adda, cdan, coral, dan, dann, mcc  # noqa: F401  (registration)
from cvtransfer.losses.base import DA_METHODS, DomainLoss, DomainLosses, build_domain_losses

__all__ = ["DA_METHODS", "DomainLoss", "DomainLosses", "build_domain_losses"]
