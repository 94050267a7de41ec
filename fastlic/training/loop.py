"""The rate-distortion training loop: loss, checkpoints, resume, CSV log.

loss = lambda * 255^2 * MSE + bpp + l1 * mean|y|

The L1 term (technique 4) pushes latent values, and so whole channels, to zero;
zero channels are skipped by the coder via the bitstream's channel mask.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..model import FastLIC, get_config
from ..model.config import ModelConfig
from .data import CropSampler


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
    anchor_family: str = "gaussian"
    nonanchor_family: str = "laplace"
    seed: int = 0


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


def save_checkpoint(path: Path, model, opt, step: int, args: TrainArgs) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "config": model.cfg.to_json(), "args": dataclasses.asdict(args)}, tmp)
    tmp.replace(path)


def train(args: TrainArgs) -> Path:
    torch.manual_seed(args.seed)
    torch.set_flush_denormal(True)   # subnormal floats (exp tails, GDN) slow CPU steps ~10x
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    cfg = get_config(args.config, anchor_family=args.anchor_family,
                     nonanchor_family=args.nonanchor_family)
    step = 0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        cfg = ModelConfig.from_json(ckpt["config"])
    model = FastLIC(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    if ckpt_path.exists():
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step = ckpt["step"]
    sampler = CropSampler(args.data, args.crop, seed=args.seed + step)
    log_path = out / "log.csv"
    new_log = not log_path.exists()
    model.train()
    last_ckpt = time.time()
    with open(log_path, "a", newline="") as f, tqdm(total=args.steps, initial=step,
                                                    mininterval=10, dynamic_ncols=True) as bar:
        writer = csv.writer(f)
        if new_log:
            writer.writerow(["step", "time", "loss", "bpp", "psnr", "l1", "lr"])
        t0 = time.time()
        skipped = 0
        while step < args.steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args)
            x = sampler.batch(args.batch)
            result = model(x)
            loss, stats = rd_loss(result, x, args.lmbda, args.l1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                skipped += 1   # a rare bad batch must not poison the weights
                if skipped > 50:
                    raise FloatingPointError(f"training diverged: {skipped} non-finite steps")
                continue
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(bpp=f"{stats['bpp']:.3f}", psnr=f"{stats['psnr']:.2f}",
                            loss=f"{stats['loss']:.3f}", refresh=False)
            if step % 20 == 0:
                writer.writerow([step, round(time.time() - t0, 1), *(round(stats[k], 5) for k in
                                 ("loss", "bpp", "psnr", "l1")), lr_at(step, args)])
                f.flush()
            if time.time() - last_ckpt > args.ckpt_every_s or step == args.steps:
                save_checkpoint(ckpt_path, model, opt, step, args)
                last_ckpt = time.time()
    return ckpt_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fastlic train", description=__doc__.splitlines()[0])
    defaults = TrainArgs(data="", out="")
    p.add_argument("data", help="folder of training images")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt and log.csv")
    for field in dataclasses.fields(TrainArgs):
        if field.name in ("data", "out"):
            continue
        p.add_argument("--" + field.name.replace("_", "-"), type=type(getattr(defaults, field.name)),
                       default=getattr(defaults, field.name))
    ns = p.parse_args(argv)
    train(TrainArgs(**vars(ns)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
