"""Learned factorized prior for the hyper-latent ``z`` (Ballé et al. 2018, appendix 6.1).

Each channel has its own monotone CDF, ``sigmoid(f_c(x))`` where ``f_c`` is a chain
of small dense layers with softplus-positive matrices and tanh gates. It is only
evaluated at bin edges: for the rate term during training and once per model to
build the shipped integer tables (:func:`fastlic.entropy.tables.build_tables`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FactorizedPrior(nn.Module):
    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1 / (len(dims) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(dims) - 1):
            init = torch.log(torch.expm1(torch.tensor(1 / scale / dims[i + 1])))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), float(init))))
            self.biases.append(nn.Parameter(torch.rand(channels, dims[i + 1], 1) - 0.5))
            if i < len(dims) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, L) -> (C, 1, L) logits of the per-channel CDF."""
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            x = torch.matmul(F.softplus(m), x) + b
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """Probability of the unit bin around each value of z: (B, C, H, W) -> same."""
        b, c, h, w = z.shape
        v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cdf(v - 0.5)
        upper = self.logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper).detach()
        p = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        return p.clamp_min(1e-9).reshape(c, b, h, w).permute(1, 0, 2, 3)

    def pmf(self, support: torch.Tensor) -> torch.Tensor:
        """Per-channel probabilities of the integers in ``support`` (L,) -> (C, L), float64."""
        c = self.matrices[0].shape[0]
        v = support.to(self.matrices[0].dtype).view(1, 1, -1).expand(c, 1, -1)
        lower, upper = self.logits_cdf(v - 0.5), self.logits_cdf(v + 0.5)
        sign = -torch.sign(lower + upper)
        return (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()[:, 0].double()
