"""Which (anchor, non-anchor) probability families code y in the fewest bits, on Kodak.

Conclusion: the ``small`` config codes anchors with a Laplace and non-anchors with a
Gaussian model. On the base checkpoint (runs/small_q3, step 7,500) that pair gave the
fewest bits on Kodak, 0.3313 bpp, after each of the 9 pairs re-tuned its parameter
networks the same way; the next pair (Laplace / logistic) was +0.09 % and the worst
+0.45 % (experiments/results/family_pairs.txt). An earlier run at step 450 picked the
same pair (docs/training.md), which is why training switched families at step 1,458.
Needs the git-ignored runs/small_q3/checkpoint.pt.

The trained transforms of a checkpoint stay frozen. For each of the 9 family
pairs, a copy of the entropy-parameter networks (anchor_net, context,
nonanchor_net) is fine-tuned on the noisy rate of y over a fixed pool of
training crops (same steps, batches, noise and learning rate for every pair,
the checkpoint's own pair included), then the model's rate estimate with
rounding (eval mode, no noise) is measured on the 24 Kodak images, padded to a
multiple of 64 like the codec. z bits are the same for every pair.

    python -m experiments.family_pairs [CHECKPOINT] [--save-best OUT.pt]   # from the repo root
"""
from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks._paths import KODAK, TRAIN
from fastlic.evaluation.report import markdown_table
from fastlic.model import FAMILIES, FastLIC, ModelConfig
from fastlic.runtime.image import model_input
from fastlic.training.data import CropSampler
from fastlic.training.families import (Latents, encode_latents, fine_tune, head_free_optimizer_state,
                                       measure, with_families)

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_checkpoint(path: Path) -> tuple[FastLIC, dict]:
    """A training-loop checkpoint -> (FastLIC in eval mode, the raw checkpoint dict)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = FastLIC(ModelConfig.from_json(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def kodak_batches(folder: Path):
    """Yield (1, 3, H', W') float32 in [0, 1], edge-padded to multiples of STRIDE, and H * W."""
    files = sorted(folder.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no PNG images in {folder}")
    for path in files:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        yield torch.from_numpy(model_input(rgb)), rgb.shape[0] * rgb.shape[1]


def training_pool(model: FastLIC, args) -> Latents:
    """Latents of ``args.pool`` random crops of the training folder (fixed seed)."""
    sampler = CropSampler(args.train, args.crop, seed=args.seed)
    chunks = [sampler.batch(min(16, args.pool - i)) for i in range(0, args.pool, 16)]
    return encode_latents(model, chunks)


def run_pair(model: FastLIC, families: tuple[str, str], pool, kodak, args) -> tuple[dict, FastLIC]:
    """Fine-tune the heads of one family pair, then measure it on Kodak."""
    tuned = with_families(model, *families)
    t0 = time.perf_counter()
    train_bpp = fine_tune(tuned, pool, args.steps, args.batch, args.lr, args.seed,
                          log=lambda s, b: log(f"    step {s:4d}: train y bpp {b:.4f}"))
    result = measure(tuned, kodak)
    result.update(train=train_bpp, seconds=time.perf_counter() - t0)
    log(f"  {families}: Kodak {result['total']:.4f} bpp ({result['seconds']:.0f} s)")
    return result, tuned


def report(results: dict, before: dict, ckpt_families: tuple[str, str]) -> tuple[str, str]:
    """Markdown table sorted by Kodak total bpp; returns it and the winner's line."""
    best_pair = min(results, key=lambda k: results[k]["total"])
    best = results[best_pair]["total"]
    rows = []
    for pair, r in sorted(results.items(), key=lambda kv: kv[1]["total"]):
        mark = " (checkpoint's)" if pair == ckpt_families else ""
        rows.append([pair[0], pair[1] + mark, r["anchor"], r["nonanchor"], r["total"],
                     r["total"] - best, 100 * (r["total"] / best - 1), r["train"]])
    rows.append([ckpt_families[0], ckpt_families[1] + " (checkpoint, not re-tuned)",
                 before["anchor"], before["nonanchor"], before["total"], before["total"] - best,
                 100 * (before["total"] / best - 1), float("nan")])
    table = markdown_table(rows, ["anchor family", "non-anchor family", "anchor bpp",
                                  "non-anchor bpp", "total bpp", "Δ vs best (bpp)", "Δ vs best (%)",
                                  "train y bpp (noisy)"], digits=[0, 0, 4, 4, 4, 4, 2, 4])
    own = results[ckpt_families]["total"]
    winner = (f"winner: anchor={best_pair[0]}, non-anchor={best_pair[1]} at {best:.4f} bpp; "
              f"the checkpoint's pair ({ckpt_families[0]}, {ckpt_families[1]}), re-tuned the same "
              f"way, is {own - best:+.4f} bpp ({100 * (own / best - 1):+.2f}%)")
    return table, winner


def save_best(path: Path, tuned: FastLIC, ckpt: dict) -> None:
    """Write a training-loop checkpoint with the winning families and re-tuned heads."""
    args = dict(ckpt["args"], anchor_family=tuned.cfg.anchor_family,
                nonanchor_family=tuned.cfg.nonanchor_family)
    out = {"model": tuned.state_dict(), "opt": head_free_optimizer_state(ckpt["opt"], tuned),
           "step": ckpt["step"], "config": tuned.cfg.to_json(), "args": args}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(out, tmp)
    tmp.replace(path)


def run(args) -> int:
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    model, ckpt = load_checkpoint(Path(args.checkpoint))
    ckpt_families = (model.cfg.anchor_family, model.cfg.nonanchor_family)
    print(f"# family pairs; checkpoint {args.checkpoint} (step {ckpt['step']}, config "
          f"{model.cfg.name}, trained with {ckpt_families}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); {platform.processor() or platform.machine()}")
    print(f"# fine-tune: heads only, {args.steps} Adam steps, batch {args.batch} of a pool of "
          f"{args.pool} {args.crop}x{args.crop} training crops (seed {args.seed}), lr {args.lr} "
          f"cosine to 0; eval: model estimate with rounding on Kodak")
    log("encoding the training pool and Kodak with the frozen transforms ...")
    pool = training_pool(model, args)
    kodak = encode_latents(model, *zip(*kodak_batches(Path(args.kodak))))
    before = measure(model, kodak)
    log(f"  done in {time.perf_counter() - t_start:.0f} s; checkpoint as is: {before['total']:.4f} bpp")
    results, tuned = {}, {}
    for pair in itertools.product(FAMILIES, FAMILIES):
        log(f"pair {pair}:")
        results[pair], tuned[pair] = run_pair(model, pair, pool, kodak, args)
    table, winner = report(results, before, ckpt_families)
    print(f"\nKodak, {len(kodak.bits_z)} images; z: {before['z']:.4f} bpp (same for all pairs)\n")
    print(table)
    print(f"\n{winner}")
    if args.save_best:
        best_pair = min(results, key=lambda k: results[k]["total"])
        save_best(Path(args.save_best), tuned[best_pair], ckpt)
        print(f"saved {best_pair} to {args.save_best}")
    print(f"runtime: {time.perf_counter() - t_start:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default=str(ROOT / "runs" / "small_q3" / "checkpoint.pt"))
    p.add_argument("--train", default=str(TRAIN), help="training image folder")
    p.add_argument("--kodak", default=str(KODAK), help="Kodak folder (evaluation only)")
    p.add_argument("--pool", type=int, default=96, help="training crops in the pool")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--steps", type=int, default=200, help="fine-tuning steps per pair")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-best", metavar="OUT.pt", help="write the winning pair as a checkpoint")
    args = p.parse_args(argv)
    for folder in (args.train, args.kodak):
        if not Path(folder).is_dir():
            print(f"folder not found: {folder}", file=sys.stderr)
            return 1
    if not Path(args.checkpoint).is_file():
        print(f"checkpoint not found: {args.checkpoint}", file=sys.stderr)
        return 1
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
