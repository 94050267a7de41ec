"""PyTorch backend: each stage calls the matching FastLIC method under inference_mode."""
from __future__ import annotations

import numpy as np
import torch

from .base import STAGES, Engine, StageSpec


class TorchEngine(Engine):
    def __init__(self, spec: StageSpec, fn, device: str = "cpu"):
        super().__init__(spec)
        self.fn = fn
        self.device = torch.device(device)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device)
                for n in self.spec.inputs]
        with torch.inference_mode():
            result = self.fn(*args)
        if isinstance(result, torch.Tensor):
            result = (result,)
        return {n: t.float().cpu().numpy() for n, t in zip(self.spec.outputs, result)}


def load_engines(model, device: str = "cpu") -> dict[str, Engine]:
    model = model.to(device).eval()
    fns = {"g_a": model.analysis, "h_a": model.hyper_analysis, "h_s": model.hyper_synthesis,
           "anchor": model.anchor_params, "nonanchor": model.nonanchor_params,
           "g_s": model.synthesis}
    return {name: TorchEngine(STAGES[name], fns[name], device) for name in STAGES}
