"""The torch engine's float16: FP16 networks with the FP16 graphs' FP32 layers
(fastlic.model.precision). CPU torch runs FP16 convolutions, so the engine's FP16 path
is checked here with its CUDA check bypassed."""
from __future__ import annotations

import numpy as np
import torch

from fastlic.engines.pytorch import engine as torch_engine
from fastlic.model.packed import to_packed
from fastlic.model.precision import Fp32, Fp32SamplingDeform, to_half


def test_to_half_keeps_sampling_and_entropy_heads_in_fp32(tiny_model):
    model = to_half(to_packed(tiny_model))
    deform = [m for m in model.modules() if isinstance(m, Fp32SamplingDeform)]
    assert deform and all(m.weight.dtype == torch.float16 for m in deform)
    for net in (model.anchor_net, model.nonanchor_net):
        assert isinstance(net[-1], Fp32)
        assert {p.dtype for p in net[-1].parameters()} == {torch.float32}
        assert {p.dtype for p in net[:-1].parameters()} == {torch.float16}
    assert to_half(model) is model and isinstance(model.anchor_net[-1].inner, torch.nn.Module)
    assert not isinstance(model.anchor_net[-1].inner, Fp32)        # not wrapped twice
    plain = to_half(to_packed(tiny_model), fp32_layers=False)
    assert {p.dtype for p in plain.parameters()} == {torch.float16}


def test_float16_engines_stay_close_to_float32(tiny_exact, photo, monkeypatch):
    monkeypatch.setattr(torch_engine, "check_options", lambda *a: torch.device("cpu"))
    fp32 = torch_engine.load_engines(tiny_exact)
    fp16 = torch_engine.load_engines(tiny_exact, dtype="float16", channels_last=False)
    assert fp16["anchor"].fn.__self__ is not None and fp16["anchor"].dtype == torch.float32
    x = photo[:64, :64].transpose(2, 0, 1)[None].astype(np.float32) / 255
    chain = [("g_a", lambda out: {"image": x}), ("h_a", lambda out: {"y": out["y"]}),
             ("h_s", lambda out: {"z_hat": np.round(out["z"])}),
             ("anchor", lambda out: {"hyper": out["hyper"]})]
    out: dict = {}
    for stage, feed in chain:      # each stage fed the FP32 outputs of the one before
        inputs = feed(out)
        out, half = fp32[stage].run(inputs), fp16[stage].run(inputs)
        for name, value in out.items():
            assert half[name].dtype == np.float32
            if stage in ("h_s", "anchor"):   # the exact stages: float16 changes no bit
                np.testing.assert_array_equal(half[name], value)
                continue
            scale = float(np.abs(value).max()) + 1e-3
            assert float(np.abs(half[name] - value).max()) <= 0.02 * scale, (stage, name)
