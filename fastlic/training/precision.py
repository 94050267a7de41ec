"""Mixed precision for training: autocast around the transforms only, GradScaler for fp16.

Only the convolutional stages run in bf16 / fp16; their outputs are cast back to
float32, so everything the rate depends on stays float32::

    x ─[g_a]─▶ y ─[h_a]─▶ z ─round─▶ ẑ ─[h_s]─▶ hyper ─[anchor_net, context, nonanchor_net]─▶ (σ, μ)
    round(y − μ), likelihoods, log2, the z prior          float32 (outside autocast)
    ŷ ─[g_s stages]─▶ features ─[g_s.out]─▶ x̂            [ ]: autocast, output cast to float32

(ŷ = round(y − μ) + μ in bf16 would be off by up to 0.25 at |y| = 32.) Inside
g_a the deformable convolution runs in float32 too: its sampling grid (pixel
index + offset) in bf16 would lose the sub-pixel offsets. The wrapping is per module instance, done with ``types.MethodType`` so a deep copy
of a wrapped model wraps the copy; :meth:`Precision.unwrap` removes it.
"""
from __future__ import annotations

import types

import torch
from torch import nn

from ..model.deform import ModulatedDeformConv

AMP_MODES = ("auto", "bf16", "fp16", "off")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda if available else cpu; ValueError for a device that cannot be used."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; choose cpu, cuda, cuda:N or auto")
    return device


def transform_modules(model: nn.Module) -> list[nn.Module]:
    """The FastLIC stages that autocast wraps (not the z prior, not the loss)."""
    mods = [model.g_a, model.h_a, model.h_s, model.anchor_net, model.context, model.nonanchor_net]
    return [m for m in mods if m is not None] + list(model.g_s.stages) + [model.g_s.out]


def fp32_modules(model: nn.Module) -> list[nn.Module]:
    """Modules inside the transforms that run with autocast off (the deformable convs)."""
    return [m for m in model.modules() if isinstance(m, ModulatedDeformConv)]


def _to_fp32(out):
    if torch.is_tensor(out):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_fp32(o) for o in out)
    return out


def _autocast_forward(self, *args, **kwargs):
    device_type, dtype = self._fastlic_amp
    with torch.autocast(device_type, dtype=dtype):
        out = type(self).forward(self, *args, **kwargs)
    return _to_fp32(out)


def _fp32_forward(self, *args, **kwargs):
    with torch.autocast(self._fastlic_amp[0], enabled=False):
        return type(self).forward(self, *_to_fp32(args), **kwargs)


class Precision:
    """Resolved AMP mode for one device: wraps models, scales the loss, steps the optimizer.

    mode "auto": bf16 on CUDA if supported, else fp16; off on CPU. "bf16" works
    on CPU too (tests); "fp16" needs CUDA. The GradScaler is enabled only for
    fp16 on CUDA.
    """

    def __init__(self, device: torch.device, mode: str = "auto"):
        if mode not in AMP_MODES:
            raise ValueError(f"unknown --amp {mode!r}; choose one of {AMP_MODES}")
        cuda = device.type == "cuda"
        if mode == "auto":
            mode = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
        if mode == "fp16" and not cuda:
            raise ValueError("--amp fp16 needs a CUDA device; use --amp bf16 or off on CPU")
        self.device, self.mode = device, mode
        self.dtype = _DTYPES.get(mode)
        self.scaler = torch.amp.GradScaler("cuda", enabled=(mode == "fp16"))

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def wrap(self, model: nn.Module) -> nn.Module:
        """Run ``model``'s transforms under autocast (no-op when AMP is off)."""
        if self.enabled:
            for mod in transform_modules(model):
                mod._fastlic_amp = (self.device.type, self.dtype)
                mod.forward = types.MethodType(_autocast_forward, mod)
            for mod in fp32_modules(model):
                mod._fastlic_amp = (self.device.type, None)
                mod.forward = types.MethodType(_fp32_forward, mod)
        return model

    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        for mod in transform_modules(model) + fp32_modules(model):
            mod.__dict__.pop("forward", None)
            mod.__dict__.pop("_fastlic_amp", None)
        return model

    def backward(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """Backward of the (scaled) loss, then unscale the gradients for clipping."""
        self.scaler.scale(loss).backward()
        if self.scaler.is_enabled():
            self.scaler.unscale_(opt)

    def step(self, opt: torch.optim.Optimizer, grads_finite: bool) -> None:
        """Optimizer step; with the scaler, also a skipped step when grads are not finite."""
        if self.scaler.is_enabled():
            self.scaler.step(opt)   # skips the update itself if grads overflowed
            self.scaler.update()
        elif grads_finite:
            opt.step()
