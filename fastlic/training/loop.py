"""The rate-distortion training loop: loss, checkpoints, resume, CSV log, AMP.

loss = lambda * 255^2 * MSE + bpp + l1 * mean|y|

The L1 term (technique 4) pushes latent values, and so whole channels, to zero;
zero channels are skipped by the coder via the bitstream's channel mask.

One step, whatever is trained::

    CropSampler ─▶ x ─▶ Objective(model, x) ─▶ (loss, stats) ─▶ backward ─▶ clip ─▶ Adam
                        plain RD here; distill.py adds teacher terms and adapters

A run folder holds checkpoint.pt (see checkpoint.py), log.csv (one row per 20
steps and the last), sessions.csv (throughput of each start or resume), curve.png (--plot).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..model import STRIDE, FastLIC, ModelConfig, get_config
from ..model.quant import calibrate, enable_qat, prepare_for
from .checkpoint import load_checkpoint, load_trained, save_checkpoint, ship_checkpoint
from .data import CropSampler
from .precision import Precision, resolve_device

__all__ = ["TrainArgs", "Objective", "rd_loss", "lr_at", "train_step", "train", "main",
           "save_checkpoint"]


@dataclasses.dataclass
class TrainArgs:
    data: str
    out: str
    config: str = "small"
    lmbda: float = 0.0067
    l1: float = 0.02
    steps: int = 20000
    batch: int = 8
    crop: int = 128
    lr: float = 2e-4
    threads: int = 0
    ckpt_every_s: float = 300.0
    anchor_family: str = ""
    nonanchor_family: str = ""
    no_deformable: bool = False
    shared_params: bool = False
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    plot: bool = False
    export: str = ""
    export_name: str = ""
    quality: int = 0
    init: str = ""
    qat: bool = False


HELP = {
    "config": "model config for a new run (a resumed run keeps its checkpoint's)",
    "lmbda": "rate-distortion trade-off: lambda * 255^2 * MSE + bpp",
    "l1": "weight of mean|y| (latent sparsity)",
    "steps": "total optimizer steps (a resumed run continues to this number)",
    "batch": "crops per step",
    "crop": "crop side in pixels (a multiple of 64)",
    "lr": "Adam learning rate (10x lower for the last 15%% of steps)",
    "anchor_family": "probability family of the anchors (gaussian, laplace, logistic; "
                     "default: --init's, else gaussian)",
    "nonanchor_family": "probability family of the non-anchors (default: --init's, else laplace)",
    "no_deformable": "ablation: a plain 3x3 conv instead of g_a's deformable one",
    "shared_params": "ablation: one parameter network for anchors and non-anchors",
    "seed": "seed of the weights' init and of the crop sampler",
    "threads": "torch CPU threads (0: torch's default)",
    "ckpt_every_s": "seconds between checkpoints (one is always written at the end)",
    "device": "auto (cuda if available), cpu, cuda or cuda:N",
    "amp": "mixed precision of the transforms: auto (bf16, else fp16, on CUDA; off on CPU), "
           "bf16, fp16 (CUDA only) or off",
    "plot": "draw RUN/curve.png from log.csv at each checkpoint",
    "export": "after training, ship the model to this .safetensors (fp16 + entropy tables)",
    "export_name": "model name written with --export (default: fastlic-<config>)",
    "quality": "rate-point number 0..255 written with --export",
    "init": "start a new run from these weights (checkpoint.pt or .safetensors: config and "
            "every tensor; Adam starts afresh), e.g. to continue on another machine",
    "qat": "quantisation-aware training of the exact entropy path (h_s, context, parameter "
           "networks in their integer formats); its activation steps are calibrated on "
           "training crops at the first step and kept (a run from QAT weights stays QAT)",
}

CALIB_BATCHES = 16   # training batches that calibrate --qat's activation steps


def load_matching(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    """Copy the tensors of ``state`` whose name and shape ``model`` shares: (copied, not copied)."""
    own = model.state_dict()
    copied = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    model.load_state_dict({k: state[k] for k in copied}, strict=False)
    return copied, sorted(set(own) - set(copied))


def rd_loss(out: dict, x: torch.Tensor, lmbda: float, l1: float) -> tuple[torch.Tensor, dict]:
    num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
    mse = torch.mean((out["x_hat"] - x) ** 2)
    bpp = (out["bits_y"].sum() + out["bits_z"].sum()) / num_pixels
    l1_term = out["y"].abs().mean()
    loss = lmbda * 255 ** 2 * mse + bpp + l1 * l1_term
    psnr = -10 * math.log10(max(mse.item(), 1e-10))
    return loss, {"loss": loss.item(), "bpp": bpp.item(), "psnr": psnr, "l1": l1_term.item()}


def lr_at(step: int, args: TrainArgs) -> float:
    """Constant, then a 10x step down for the last 15% of steps."""
    return args.lr if step < 0.85 * args.steps else args.lr / 10


class Objective:
    """What :func:`train` optimises: plain rate-distortion. Distillation subclasses it.

    ``columns`` are the stats logged per row, in order.
    """

    columns: tuple[str, ...] = ("loss", "bpp", "psnr", "l1")

    def __init__(self, args: TrainArgs):
        self.args = args

    def config(self) -> ModelConfig:
        """The model of a new run: --init's (else --config's), changed by the family and
        ablation flags."""
        a = self.args
        cfg = load_trained(a.init).cfg if a.init else get_config(a.config)
        changes = {k: v for k, v in (("anchor_family", a.anchor_family),
                                     ("nonanchor_family", a.nonanchor_family)) if v}
        if a.no_deformable:
            changes["deformable"] = False
        if a.shared_params:
            changes["shared_params"] = True
        return dataclasses.replace(cfg, **changes)

    def init(self, model: FastLIC) -> None:
        """Initialise a new run's model before its first step: from --init, else random.

        When the flags changed the architecture (an ablation started from a trained
        model), every tensor whose name and shape match is copied and the rest keep
        their random init; both lists are printed.
        """
        if not self.args.init:
            return
        source = load_trained(self.args.init)
        # the integer form is derived from the float weights at shipping: never trained
        state = {k: v for k, v in source.state_dict().items() if not k.startswith("exact.")}
        prepare_for(model, state)
        if source.cfg == model.cfg:
            model.load_state_dict(state)
            return
        copied, fresh = load_matching(model, state)
        dropped = sorted(set(state) - set(copied))
        print(f"initialised {len(copied)} tensors from {self.args.init}; random: "
              f"{', '.join(fresh) or 'none'}; not used: {', '.join(dropped) or 'none'}")

    def prepare(self, model: FastLIC) -> nn.Module | None:
        """Called for new and resumed runs, before the optimizer is built: may freeze parts
        of ``model``; returns trainable modules the loss uses, saved beside the model
        (checkpoint key "adapters") and never shipped, or None."""
        return None

    def to(self, device: torch.device, precision: Precision) -> None:
        """Move (and AMP-wrap) whatever the loss needs besides the model."""

    def __call__(self, model: FastLIC, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """x (B, 3, H, W) float32 in [0, 1] -> (scalar loss, stats with every column)."""
        return rd_loss(model(x), x, self.args.lmbda, self.args.l1)


def train_step(model: FastLIC, objective: Objective, x: torch.Tensor,
               opt: torch.optim.Optimizer, precision: Precision) -> tuple[dict, str]:
    """One optimizer step on batch ``x``: (stats, status).

    status: "ok"; "overflow" (fp16 gradients overflowed, the GradScaler skipped
    the update and lowered its scale); "bad" (non-finite loss or gradients; no
    update: a rare bad batch must not poison the weights).
    """
    loss, stats = objective(model, x)
    opt.zero_grad(set_to_none=True)
    precision.backward(loss, opt)
    params = [p for group in opt.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    loss_ok, grads_ok = bool(torch.isfinite(loss)), bool(torch.isfinite(grad_norm))
    precision.step(opt, loss_ok and grads_ok)
    if loss_ok and grads_ok:
        return stats, "ok"
    return stats, "overflow" if loss_ok and precision.scaler.is_enabled() else "bad"


@dataclasses.dataclass
class _Run:
    """Everything one training session holds."""

    args: TrainArgs
    objective: Objective
    model: FastLIC
    extra: nn.Module | None
    opt: torch.optim.Optimizer
    precision: Precision
    step: int
    out: Path

    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def save(self) -> None:
        save_checkpoint(self.ckpt_path, self.model, self.opt, self.step, self.args,
                        adapters=self.extra.state_dict() if self.extra is not None else None,
                        scaler=self.precision.scaler.state_dict()
                        if self.precision.scaler.is_enabled() else None)


def _start(args: TrainArgs, objective: Objective) -> _Run:
    """Build (or resume from RUN/checkpoint.pt) model, extra modules and optimizer on the device."""
    device = resolve_device(args.device)
    precision = Precision(device, args.amp)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    model = FastLIC(ModelConfig.from_json(ckpt["config"]) if ckpt else objective.config())
    if ckpt is None:
        objective.init(model)
    else:
        prepare_for(model, ckpt["model"])
    if args.qat and model.qat is None and ckpt is None:
        sampler = CropSampler(args.data, args.crop, seed=args.seed + 10_000)
        steps = calibrate(model, (sampler.batch(args.batch) for _ in range(CALIB_BATCHES)))
        enable_qat(model, steps)
        print("calibrated the exact path's activation steps on "
              f"{CALIB_BATCHES * args.batch} crops: "
              + ", ".join(f"{k} {v:.3g}" for k, v in steps.items()))
    extra = objective.prepare(model)
    model.to(device)
    groups = [{"params": list(model.parameters())}]   # group 0: the model, as checkpoints expect
    if extra is not None:
        extra.to(device)
        groups.append({"params": list(extra.parameters())})
    opt = torch.optim.Adam(groups, lr=args.lr)
    if ckpt:
        model.load_state_dict(ckpt["model"])
        if extra is not None:
            extra.load_state_dict(ckpt["adapters"])
        opt.load_state_dict(ckpt["opt"])
        if "scaler" in ckpt and precision.scaler.is_enabled():
            precision.scaler.load_state_dict(ckpt["scaler"])
    objective.to(device, precision)
    precision.wrap(model)
    return _Run(args, objective, model, extra, opt, precision, ckpt["step"] if ckpt else 0, out)


def _loop(run: _Run) -> float:
    """Steps until args.steps, with the bar, the CSV log, checkpoints and plots.

    Returns the seconds spent stepping (after the images are loaded).
    """
    args, device = run.args, run.precision.device
    sampler = CropSampler(args.data, args.crop, seed=args.seed + run.step)
    log_path = run.out / "log.csv"
    new_log = not log_path.exists()
    run.model.train()
    last_ckpt = time.time()
    bad = overflow_run = 0
    with open(log_path, "a", newline="") as f, tqdm(total=args.steps, initial=run.step,
                                                    mininterval=10, dynamic_ncols=True) as bar:
        writer = csv.writer(f)
        if new_log:
            writer.writerow(["step", "time", *run.objective.columns, "lr"])
        t0 = time.time()
        while run.step < args.steps:
            for g in run.opt.param_groups:
                g["lr"] = lr_at(run.step, args)
            x = sampler.batch(args.batch).to(device, non_blocking=True)
            stats, status = train_step(run.model, run.objective, x, run.opt, run.precision)
            bad += status == "bad"
            overflow_run = overflow_run + 1 if status == "overflow" else 0
            if bad > 50 or overflow_run > 50:
                raise FloatingPointError(f"training diverged: {bad} non-finite steps, "
                                         f"{overflow_run} fp16 overflows in a row")
            if status != "ok":
                continue
            run.step += 1
            bar.update(1)
            bar.set_postfix(bpp=f"{stats['bpp']:.3f}", psnr=f"{stats['psnr']:.2f}",
                            loss=f"{stats['loss']:.3f}", refresh=False)
            if run.step % 20 == 0 or run.step == args.steps:
                writer.writerow([run.step, round(time.time() - t0, 1),
                                 *(round(stats[k], 5) for k in run.objective.columns),
                                 lr_at(run.step, args)])
                f.flush()
            if time.time() - last_ckpt > args.ckpt_every_s or run.step == args.steps:
                run.save()
                if args.plot:
                    _plot(run.out)
                last_ckpt = time.time()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.time() - t0


def _plot(run_dir: Path) -> None:
    """RUN/curve.png, unless log.csv has no row yet."""
    from .plot import plot_log
    try:
        plot_log(run_dir)
    except ValueError:   # no rows yet: the next checkpoint will draw it
        pass


def _log_session(run: _Run, start_step: int, seconds: float) -> float:
    """Append this session's throughput to RUN/sessions.csv and print it; returns images/s."""
    images = (run.step - start_step) * run.args.batch
    rate = images / seconds if seconds > 0 else 0.0
    path = run.out / "sessions.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["date", "device", "amp", "batch", "crop", "start_step", "end_step",
                             "seconds", "images_per_s"])
        writer.writerow([time.strftime("%Y-%m-%d %H:%M:%S"), str(run.precision.device),
                         run.precision.mode, run.args.batch, run.args.crop, start_step, run.step,
                         round(seconds, 1), round(rate, 2)])
    print(f"trained steps {start_step}..{run.step} in {seconds:.0f} s: {rate:.2f} images/s "
          f"({run.args.crop}px crops, {run.precision.device}, amp {run.precision.mode})")
    return rate


def train(args: TrainArgs, objective: Objective | None = None) -> Path:
    """Train (or resume) the run in ``args.out``; returns the checkpoint path."""
    if args.crop % STRIDE:
        raise ValueError(f"--crop must be a multiple of {STRIDE}, got {args.crop}")
    torch.manual_seed(args.seed)
    torch.set_flush_denormal(True)   # subnormal floats (exp tails, GDN) slow CPU steps ~10x
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.plot:
        from .plot import PlotUnavailableError
        try:
            import matplotlib  # noqa: F401  (fail now, not at the first checkpoint)
        except ImportError as exc:
            raise PlotUnavailableError(f"--plot needs matplotlib ({exc})") from exc
    run = _start(args, objective or Objective(args))
    start_step = run.step
    seconds = _loop(run)
    _log_session(run, start_step, seconds)
    if run.step == start_step and not run.ckpt_path.exists():
        run.save()
    if args.export:
        ship_checkpoint(run.ckpt_path, args.export, args.export_name or None, args.quality)
        print(f"shipped {args.export}")
    return run.ckpt_path


def add_dataclass_args(p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (),
                       helps: dict | None = None) -> None:
    """One ``--flag`` per dataclass field (``a_b_`` -> ``--a-b``); bools become switches."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)
                if f.default is not dataclasses.MISSING}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = "--" + field.name.rstrip("_").replace("_", "-")
        text = (helps or HELP).get(field.name, "")
        if field.name not in defaults:
            p.add_argument(flag, dest=field.name, required=True, help=text)
        elif isinstance(defaults[field.name], bool):
            p.add_argument(flag, dest=field.name, action="store_true", help=text)
        else:
            default = defaults[field.name]
            shown = f"default: {default}" if default != "" else ""
            p.add_argument(flag, dest=field.name, type=type(default), default=default,
                           help=f"{text} ({shown})" if text and shown else text or shown)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastlic train", description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", help="folder of training images")
    p.add_argument("--out", help="run folder: checkpoint.pt, log.csv, sessions.csv")
    p.add_argument("--plot-only", metavar="RUN_DIR",
                   help="only draw RUN_DIR/log.csv to RUN_DIR/curve.png and exit "
                        "(safe while that run trains)")
    add_dataclass_args(p, TrainArgs, skip=("data", "out"))
    ns = vars(p.parse_args(argv))
    plot_only = ns.pop("plot_only")
    if plot_only:
        from .plot import plot_log
        print(plot_log(plot_only))
        return 0
    if not ns["data"] or not ns["out"]:
        p.error("DATA and --out are required (or give --plot-only RUN_DIR)")
    train(TrainArgs(**ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
