"""LogME (You et al., ICML 2021): the maximum evidence of a Bayesian linear model on frozen features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvtransfer.scores.transferability.base import Array, check_inputs, register_score

BISECTIONS = 64  # halvings of log(alpha/beta)'s bracket: far below float64 precision at the end
T_RANGE = (1e-12, 1e12)  # the bracket of alpha/beta, in multiples of the largest eigenvalue of F^T F


@dataclass
class LogMEFit:
    """Per class: the maximum log evidence (not divided by N) and the maximising alpha and beta."""

    evidence: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray


@register_score("logme")
def logme(features: Array, labels: Array) -> float:
    r"""LogME of ``features`` (N x D) for class ``labels`` (N,); higher transfers better.

    For each class c, Bayesian linear regression of the one-hot target y on the features,
    w ~ N(0, alpha^-1 I), y | w ~ N(F w, beta^-1 I), has the evidence

        L(alpha, beta) = D/2 log alpha + N/2 log beta - N/2 log 2pi - beta/2 ||F m - y||^2
                         - alpha/2 ||m||^2 - 1/2 log |A|,   A = alpha I + beta F^T F,  m = beta A^-1 F^T y,

    maximised by MacKay's fixed point gamma = sum_i beta s_i / (alpha + beta s_i) (s_i the eigenvalues
    of F^T F), alpha <- gamma / ||m||^2, beta <- (N - gamma) / ||F m - y||^2. LogME = mean over classes
    of max L / N. You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML 2021.

    One eigendecomposition of the smaller Gram matrix (F^T F or F F^T) serves every class and step,
    so it is fast for N >> D and for D >> N. m, gamma and the updates depend on alpha and beta through
    t = alpha / beta only, and the update of t moves up the evidence (g(t) > t exactly where the
    evidence, maximised over beta, increases with t), so the fixed point t = g(t) is found by bisection
    on log t, to float64 precision for every class at once; plain iteration can need thousands of steps.
    Unlike the public reference (11 steps at most, and log |A| summed over min(N, D) eigenvalues only),
    it converges, and counts the D - rank eigenvalues equal to alpha, so appending zero feature columns
    leaves the score unchanged.
    """
    fit = logme_fit(features, labels)
    return float(np.mean(fit.evidence) / len(np.asarray(labels).reshape(-1)))


def logme_fit(features: Array, labels: Array) -> LogMEFit:
    """The per-class maximum evidence (not divided by N) and its alpha, beta."""
    f, y = check_inputs(features, labels)
    n, d = f.shape
    targets = np.eye(int(y.max()) + 1)[y]
    sigma, z2, outside = _spectrum(f, targets)
    t = _fixed_point(sigma, z2, outside, n)
    return LogMEFit(*_profile_evidence(t, sigma, z2, outside, n, d))


def _spectrum(f: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero eigenvalues s of F^T F, squared projections (U^T y)^2 (rank x C), and ||y||^2 outside span(F)."""
    n, d = f.shape
    gram = f.T @ f if n > d else f @ f.T
    sigma, vectors = np.linalg.eigh(gram)
    keep = sigma > max(sigma.max(), 0.0) * max(n, d) * np.finfo(np.float64).eps
    sigma, vectors = sigma[keep], vectors[:, keep]
    if n > d:  # U = F V / sqrt(s): project through F instead of forming U
        projections = (vectors.T @ (f.T @ targets)) / np.sqrt(sigma)[:, None]
    else:
        projections = vectors.T @ targets
    z2 = projections**2
    outside = np.maximum((targets**2).sum(axis=0) - z2.sum(axis=0), 0.0)
    return sigma, z2, outside


def _fit_terms(t: np.ndarray, sigma: np.ndarray, z2: np.ndarray, outside: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """gamma, ||m||^2 and ||F m - y||^2 at t = alpha / beta (m depends on alpha and beta through t only)."""
    s = sigma[:, None]
    gamma = (s / (s + t)).sum(axis=0)
    m2 = (s * z2 / (s + t) ** 2).sum(axis=0)
    res2 = (z2 * (t / (s + t)) ** 2).sum(axis=0) + outside
    return gamma, m2, res2


def _fixed_point(sigma: np.ndarray, z2: np.ndarray, outside: np.ndarray, n: int) -> np.ndarray:
    """t = alpha / beta solving MacKay's t = g(t) = gamma ||F m - y||^2 / ((N - gamma) ||m||^2), per class.

    Where the evidence still rises at the top of the bracket, the features explain nothing of that
    class and the evidence peaks as alpha -> inf (t stays at the top); where it falls at the bottom,
    t stays at the bottom.
    """
    scale = sigma.max() if sigma.size else 1.0
    low = np.full(z2.shape[1], np.log(T_RANGE[0] * scale))
    high = np.full(z2.shape[1], np.log(T_RANGE[1] * scale))
    rises_at_low, rises_at_high = _rises(np.exp(low), sigma, z2, outside, n), _rises(np.exp(high), sigma, z2, outside, n)
    for _ in range(BISECTIONS):
        middle = (low + high) / 2
        rises = _rises(np.exp(middle), sigma, z2, outside, n)
        low, high = np.where(rises, middle, low), np.where(rises, high, middle)
    log_t = np.where(rises_at_high, high, np.where(rises_at_low, (low + high) / 2, low))
    return np.exp(log_t)


def _rises(t: np.ndarray, sigma: np.ndarray, z2: np.ndarray, outside: np.ndarray, n: int) -> np.ndarray:
    """g(t) > t, i.e. MacKay's update increases t: the evidence increases with t there."""
    gamma, m2, res2 = _fit_terms(t, sigma, z2, outside)
    return gamma * res2 > t * m2 * (n - gamma)


def _profile_evidence(t: np.ndarray, sigma: np.ndarray, z2: np.ndarray, outside: np.ndarray, n: int, d: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evidence at alpha = t beta with beta = N / (||F m - y||^2 + t ||m||^2), its maximiser for that t."""
    _, m2, res2 = _fit_terms(t, sigma, z2, outside)
    beta = n / (res2 + t * m2)
    alpha = t * beta
    k = sigma.size
    log_det = np.log(alpha[None, :] + beta[None, :] * sigma[:, None]).sum(axis=0) + (d - k) * np.log(alpha)
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
                - beta / 2 * res2 - alpha / 2 * m2 - log_det / 2)
    return evidence, alpha, beta
