"""Knowledge distillation, passes 2 and 3 (pass 1 is ``fastlic train --config teacher``).

Pass 2 trains a student (config "student": the teacher's encoder, hyperprior and
entropy networks, a 64-channel decoder) against the frozen teacher; pass 3 slims
the decoder further ("student_slim", under half the student decoder's MACs),
copies everything outside the decoder from pass 2, and trains against the
teacher again. Both passes run the ordinary loop (:func:`loop.train`) with
:class:`DistillObjective`::

    x ─▶ teacher (eval, no grad) ─▶ x̂_t, features f_t,k (d_t ch.), σ_t, μ_t
    x ─▶ student (train)         ─▶ x̂_s, features f_s,k (d_s ch.), σ_s, μ_s, bits
                                            │
                          adapter_k: 1x1 conv d_s → d_t (trained, never shipped)
    loss = RD(student)                                   λ·255²·MSE(x̂_s, x) + bpp + l1·|y|
         + w_rec  · λ·255²·MSE(x̂_s, x̂_t)                 d_rec
         + w_feat · mean_k MSE(adapter_k(f_s,k), f_t,k) / mean(f_t,k²)    d_feat
         + w_ent  · (MSE(log σ_s, log σ_t) + MSE(μ_s, μ_t))               d_ent

The adapters live in the checkpoint under "adapters"; :func:`checkpoint.ship_checkpoint`
ships ``ckpt["model"]`` only. See docs/training.md for the commands.
"""
from __future__ import annotations

import argparse
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ..model import FastLIC, ModelConfig, get_config
from .checkpoint import load_trained
from .loop import HELP, Objective, TrainArgs, add_dataclass_args, rd_loss, train
from .precision import Precision

DECODER_PREFIX = "g_s."
DEFAULT_CONFIG = {2: "student", 3: "student_slim"}


@dataclasses.dataclass
class DistillArgs(TrainArgs):
    config: str = ""
    teacher: str = ""
    pass_: int = 2
    init: str = ""
    w_rec: float = 1.0
    w_feat: float = 0.1
    w_ent: float = 0.01
    freeze_shared: bool = False


DISTILL_HELP = {
    **HELP,
    "config": "student config (default: student for pass 2, student_slim for pass 3)",
    "teacher": "the teacher: checkpoint.pt of pass 1 or a shipped .safetensors (required)",
    "pass_": "2: student against the teacher; 3: slim student, initialised from --init",
    "init": "where the parts outside the decoder start: 'teacher' (pass-2 default), 'none' "
            "(random), or a checkpoint/.safetensors (pass 3: the pass-2 checkpoint, required)",
    "w_rec": "weight of the MSE to the teacher's reconstruction (in units of the distortion term)",
    "w_feat": "weight of the relative MSE of adapted decoder features to the teacher's",
    "w_ent": "weight of the entropy-parameter term (log-scale and mean MSE)",
    "anchor_family": "not allowed: the student takes the families of --init (or the teacher)",
    "nonanchor_family": "not allowed, as --anchor-family",
    "no_deformable": "not allowed: the student keeps the encoder of --init (or the teacher)",
    "shared_params": "not allowed: the student keeps the entropy model of --init (or the teacher)",
    "freeze_shared": "train only the decoder (and adapters); keep the copied parts fixed",
}


class FeatureAdapters(nn.ModuleList):
    """One 1x1 conv per decoder stage: student width d_s -> teacher width d_t."""

    def __init__(self, student_channels: int, teacher_channels: int, stages: int):
        super().__init__(nn.Conv2d(student_channels, teacher_channels, 1) for _ in range(stages))


def distill_terms(student: dict, teacher: dict, adapters: FeatureAdapters,
                  lmbda: float) -> dict[str, torch.Tensor]:
    """The three unweighted terms (scalars) from ``FastLIC.forward(x, return_features=True)`` outputs."""
    rec = lmbda * 255 ** 2 * F.mse_loss(student["x_hat"], teacher["x_hat"])
    feat = torch.stack([F.mse_loss(a(fs), ft) / ft.pow(2).mean().clamp_min(1e-6) for a, fs, ft in
                        zip(adapters, student["dec_features"], teacher["dec_features"])]).mean()
    ent = (F.mse_loss(student["scale"].log(), teacher["scale"].log())
           + F.mse_loss(student["mean"], teacher["mean"]))
    return {"d_rec": rec, "d_feat": feat, "d_ent": ent}


def copy_shared(dst: FastLIC, src: FastLIC) -> list[str]:
    """Copy every tensor outside the decoder (g_a, h_a, h_s, entropy networks, z prior).

    Returns the names copied. ValueError naming the tensors whose shapes differ
    (configs that differ outside the decoder cannot share those parts).
    """
    src_state = src.state_dict()
    dst_state = dst.state_dict()
    shared = [k for k in dst_state if not k.startswith(DECODER_PREFIX)]
    bad = [k for k in shared if k not in src_state or src_state[k].shape != dst_state[k].shape]
    if bad:
        raise ValueError(f"{dst.cfg.name} and {src.cfg.name} differ outside the decoder "
                         f"({', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}); "
                         "initialise from a matching model or pass --init none")
    dst.load_state_dict({k: src_state[k] for k in shared}, strict=False)
    return shared


def decoder_macs_per_pixel(cfg: ModelConfig) -> float:
    """Multiply-accumulates of g_s per output pixel (convolutions and IGDN), counted by hooks."""
    g_s = FastLIC(cfg).g_s
    total = [0]

    def count(mod, inputs, out):
        if isinstance(mod, nn.ConvTranspose2d):   # every input pixel meets every tap once
            total[0] += inputs[0][0].numel() * mod.out_channels * mod.weight[0, 0].numel()
        elif isinstance(mod, nn.Conv2d):
            total[0] += out[0].numel() * mod.in_channels * mod.weight[0, 0].numel()
        elif type(mod).__name__ == "GDN":          # a 1x1 conv over |x|
            total[0] += out[0].numel() * out.shape[1]

    hooks = [m.register_forward_hook(count) for m in g_s.modules()]
    with torch.no_grad():
        g_s(torch.zeros(1, cfg.latent_channels, 4, 4))
    for h in hooks:
        h.remove()
    return total[0] / (64 * 64)


class DistillObjective(Objective):
    """Rate-distortion of the student plus the teacher terms; see the module docstring."""

    columns = ("loss", "bpp", "psnr", "l1", "d_rec", "d_feat", "d_ent")

    def __init__(self, args: DistillArgs):
        super().__init__(args)
        if args.pass_ not in DEFAULT_CONFIG:
            raise ValueError(f"--pass must be 2 or 3, got {args.pass_} (pass 1 is fastlic train)")
        if not args.teacher:
            raise ValueError("--teacher is required: the pass-1 checkpoint.pt or .safetensors")
        if args.pass_ == 3 and args.init in ("", "teacher", "none"):
            raise ValueError("pass 3 needs --init PASS2_CHECKPOINT (the student of pass 2)")
        self.teacher = load_trained(args.teacher).requires_grad_(False)
        self.adapters: FeatureAdapters | None = None
        init = args.init or "teacher"
        self.source = (None if init == "none" else self.teacher if init == "teacher"
                       else load_trained(init))

    def config(self) -> ModelConfig:
        a, fam = self.args, (self.source or self.teacher).cfg
        if a.no_deformable or a.shared_params or a.anchor_family or a.nonanchor_family:
            raise ValueError("distillation keeps the architecture and families of --init (or "
                             "the teacher) outside the decoder; drop --no-deformable, "
                             "--shared-params and the family flags")
        cfg = get_config(a.config or DEFAULT_CONFIG[a.pass_], anchor_family=fam.anchor_family,
                         nonanchor_family=fam.nonanchor_family)
        if a.w_ent > 0 and cfg.latent_channels != self.teacher.cfg.latent_channels:
            raise ValueError(f"entropy-parameter distillation needs the teacher's latent channels "
                             f"({self.teacher.cfg.latent_channels}), {cfg.name} has "
                             f"{cfg.latent_channels}; pass --w-ent 0")
        return cfg

    def init(self, model: FastLIC) -> None:
        if self.source is not None:
            copied = copy_shared(model, self.source)
            print(f"initialised {len(copied)} tensors outside the decoder from {self.args.init or 'teacher'}")
        print(f"decoder MACs/pixel: student {decoder_macs_per_pixel(model.cfg):.0f}, "
              f"teacher {decoder_macs_per_pixel(self.teacher.cfg):.0f}")

    def prepare(self, model: FastLIC) -> FeatureAdapters:
        if self.args.freeze_shared:
            for name, p in model.named_parameters():
                p.requires_grad_(name.startswith(DECODER_PREFIX))
        self.adapters = FeatureAdapters(model.cfg.dec_channels, self.teacher.cfg.dec_channels,
                                        len(model.g_s.stages))
        return self.adapters

    def to(self, device: torch.device, precision: Precision) -> None:
        precision.wrap(self.teacher.to(device).eval())

    def __call__(self, model: FastLIC, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        a = self.args
        out = model(x, return_features=True)
        with torch.no_grad():
            ref = self.teacher(x, return_features=True)
        loss, stats = rd_loss(out, x, a.lmbda, a.l1)
        terms = distill_terms(out, ref, self.adapters, a.lmbda)
        loss = loss + a.w_rec * terms["d_rec"] + a.w_feat * terms["d_feat"] + a.w_ent * terms["d_ent"]
        stats.update({k: v.item() for k, v in terms.items()}, loss=loss.item())
        return loss, stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastlic distill", description=__doc__.splitlines()[0])
    p.add_argument("data", help="folder of training images")
    p.add_argument("--out", required=True, help="run folder (as fastlic train)")
    add_dataclass_args(p, DistillArgs, skip=("data", "out"), helps=DISTILL_HELP)
    args = DistillArgs(**vars(p.parse_args(argv)))
    try:
        objective = DistillObjective(args)
    except ValueError as exc:
        p.error(str(exc))
    train(args, objective)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
