"""Probability models for the quantized latent: Gaussian, Laplacian and logistic.

Each family is described by its CDF for a unit scale. The likelihood of an integer
residual ``v`` under scale ``s`` is ``cdf((v + 0.5) / s) - cdf((v - 0.5) / s)``,
computed on the negative half-line where it is numerically stable. The same CDF
builds the shipped probability tables (:mod:`fastlic.entropy.tables`), so training
and coding agree on what each family means.
"""
from __future__ import annotations

import math

import torch

FAMILIES = ("gaussian", "laplace", "logistic")

# The scale grid: scales are bounded below by SCALE_MIN (training and coding alike);
# the shipped tables hold NUM_SCALES log-spaced scales from SCALE_MIN to SCALE_MAX.
SCALE_MIN = 0.11
SCALE_MAX = 60.0
NUM_SCALES = 64           # at most 256: scale_index returns uint8


def unit_cdf(family: str, x: torch.Tensor) -> torch.Tensor:
    """CDF of the zero-mean, unit-scale distribution of ``family`` at ``x``."""
    if family == "gaussian":
        return 0.5 * torch.erfc(-x / math.sqrt(2.0))
    if family == "laplace":
        tail = 0.5 * torch.exp(-x.abs())   # finite on both branches, so gradients stay finite
        return torch.where(x < 0, tail, 1.0 - tail)
    if family == "logistic":
        return torch.sigmoid(x)
    raise ValueError(f"unknown distribution family {family!r}; choose one of {FAMILIES}")


def likelihood(family: str, residual: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Probability mass of the unit-width bin around ``residual`` (any shape, float)."""
    v = residual.abs()
    upper = unit_cdf(family, (0.5 - v) / scale)
    lower = unit_cdf(family, (-0.5 - v) / scale)
    return (upper - lower).clamp_min(1e-9)
