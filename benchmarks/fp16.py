"""FP16 graphs on Kodak: activation ranges, nodes kept FP32, errors, and FP16 PSNR.

    python -m benchmarks.fp16 [KODAK_DIR] [--limit N] [--model PATH] [--threads N]
                              [--margin 4] [--ranges-out JSON]

1. Exports the FP32 graphs (both g_a variants) to a temporary directory and
   measures every float tensor's max |x| on the images, edge-padded to multiples
   of 64 as the codec pads them (:mod:`fastlic.export.ranges`); prints the largest
   per graph. ``--ranges-out`` saves them for ``fastlic export --fp16 --fp16-ranges``.
2. Converts each graph to FP16 (:mod:`fastlic.export.fp16`); prints the nodes kept
   FP32 and why.
3. Max |error| of every stage output against FP32 PyTorch, each stage fed the FP32
   PyTorch inputs: the FP16 graphs in onnxruntime CPU (which has no FP16 kernels for
   most ops and computes them in FP32: a test of the graphs, not of FP16 arithmetic),
   and PyTorch FP16 with the same FP32 nodes, then with no FP32 nodes at all (sampling
   and entropy heads in FP16 too) for comparison; for scale, the share of
   probability-table indices (``EntropyTables.scale_index``) that differ.
   3b: g_a's error with the sampling in FP32 and with FP16 sampling positions, on the
   first image upscaled 1x, 2x and 4x (FP16 positions get coarser as images grow).
4. Per image, the whole codec pipeline (quantisation as the codec does it, no entropy
   coding: it is lossless) in PyTorch FP32 and FP16: PSNR of the FP16 reconstruction
   against the FP32 one and of each against the original, and the share of quantised
   symbols that differ.

PyTorch FP16 here is ``model.half()`` on the CPU: oneDNN convolutions take and return
FP16 and accumulate in FP32 (as GPU tensor cores do), element-wise ops round each
result to FP16. It mirrors the FP16 graphs: the deformable convolution's sampling
and the last convolution plus scale/mean of the entropy networks run in FP32, stage
inputs and outputs are FP32.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
import torch.nn.functional as F

from fastlic.stages import STAGES
from fastlic.evaluation.metrics import psnr
from fastlic.export import export_model
from fastlic.export.check import reference_io
from fastlic.export.fp16 import FP16_MAX, fp16_file, write_fp16
from fastlic.export.graphs import STAGE_METHODS
from fastlic.export.ranges import measure_ranges
from fastlic.model.deform import ModulatedDeformConv
from fastlic.model.packed import to_packed
from fastlic.model.precision import to_half
from fastlic.modelfile import file_hash, load_model
from fastlic.runtime.image import model_input
from fastlic.modelfile import read_shipped, shipped_weights

from benchmarks._paths import KODAK as DEFAULT_DIR  # noqa: E402
DEFAULT_MODEL = shipped_weights()
FILES = {"g_a.onnx": "g_a", "g_a_gridsample.onnx": "g_a", "h_a.onnx": "h_a", "h_s.onnx": "h_s",
         "anchor.onnx": "anchor", "nonanchor.onnx": "nonanchor", "g_s.onnx": "g_s"}


# ---- PyTorch FP16 with the FP32 nodes of the FP16 graphs ----------------------------
class _Fp16Coords(ModulatedDeformConv):
    """All FP16, sampling positions included; only the bilinear read of the FP16 values at
    the FP16 positions runs in FP32, as GPU kernels do (torch's CPU grid_sample in FP16
    returns NaN from 1024x1536 images on and crashes on larger ones)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x)
        b, c, h, w = x.shape
        ys = torch.arange(h, dtype=x.dtype).view(1, h, 1)
        xs = torch.arange(w, dtype=x.dtype).view(1, 1, w)
        out = self.bias.view(1, -1, 1, 1)
        for k in range(9):
            py = ys + (k // 3 - 1) + offset[:, 2 * k]
            px = xs + (k % 3 - 1) + offset[:, 2 * k + 1]
            grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)
            sampled = F.grid_sample(x.float(), grid.float(), align_corners=False).to(x.dtype)
            out = out + F.conv2d(sampled * mask[:, k:k + 1],
                                 self.weight[:, :, k // 3, k % 3, None, None])
        return out


def half_model(model, fp32_nodes: bool = True):
    """``model`` in FP16 in the torch engine's packed form (checkerboard stages write
    zeros at the other pass's positions, as the reference does); with ``fp32_nodes``,
    the FP16 graphs' FP32 nodes in FP32 (:func:`fastlic.model.precision.to_half`, as the
    torch engine's float16), else everything in FP16, sampling positions included."""
    m = to_half(to_packed(model).eval(), fp32_layers=fp32_nodes)
    if not fp32_nodes:
        for module in m.modules():
            if type(module) is ModulatedDeformConv:
                module.__class__ = _Fp16Coords
    return m


def torch_runner(model, dtype):
    """stage, **inputs (float32 numpy) -> outputs (float32 numpy); computes in ``dtype``."""
    def run(stage: str, **inputs) -> dict[str, np.ndarray]:
        spec = STAGES[stage]
        args = [torch.from_numpy(inputs[n]).to(dtype) for n in spec.inputs]
        with torch.inference_mode():
            out = getattr(model, STAGE_METHODS[stage])(*args)
        out = (out,) if isinstance(out, torch.Tensor) else out
        return {n: t.float().numpy() for n, t in zip(spec.outputs, out)}
    return run


def ort_runner(directory: Path, threads: int):
    from fastlic.engines.onnxruntime.engine import make_session

    sessions = {}
    for file, stage in FILES.items():
        if file != "g_a_gridsample.onnx":
            sessions[stage] = make_session(directory / fp16_file(file), ["CPUExecutionProvider"],
                                           threads, log_severity_level=3)

    def run(stage: str, **inputs) -> dict[str, np.ndarray]:
        names = list(STAGES[stage].outputs)
        return dict(zip(names, sessions[stage].run(names, inputs)))
    return run


# ---- the codec pipeline, without entropy coding -------------------------------------
def code(run, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (1, 3, H, W) float32 -> (x̂ (H, W, 3) uint8, symbols (1, M, H/16, W/16))."""
    y = run("g_a", image=x)["y"]
    hyper = run("h_s", z_hat=np.round(run("h_a", y=y)["z"]))["hyper"]
    a = run("anchor", hyper=hyper)
    anchor = (np.add.outer(np.arange(y.shape[2]), np.arange(y.shape[3])) % 2) == 0
    sym_a = np.round(y - a["mean"])
    y_hat_a = np.where(anchor, sym_a + a["mean"], 0).astype(np.float32)
    n = run("nonanchor", hyper=hyper, y_hat_anchor=y_hat_a)
    sym = np.where(anchor, sym_a, np.round(y - n["mean"]))
    y_hat = np.where(anchor, y_hat_a, sym + n["mean"]).astype(np.float32)
    x_hat = run("g_s", y_hat=y_hat)["image_hat"][0].transpose(1, 2, 0)
    return np.clip(np.round(x_hat * 255.0), 0, 255).astype(np.uint8), sym


# ---- report sections ---------------------------------------------------------------
def print_ranges(ranges, directory: Path, top: int = 4) -> None:
    print(f"\n## 1. Activation ranges (max |x| over {len(ranges.images)} images; "
          f"FP16 max {FP16_MAX:g})\n")
    for file, g in ranges.graphs.items():
        items = sorted(g.tensors.items(), key=lambda kv: -kv[1].max_abs)
        worst = ", ".join(f"{n} ({r.op}) {r.max_abs:.4g}" for n, r in items[:top])
        print(f"{file:<22} {len(items):>4} tensors; largest: {worst}")
    import onnx

    g = ranges.graphs["g_a.onnx"].tensors
    for node in onnx.load(str(directory / "g_a.onnx")).graph.node:
        if node.op_type == "Div":
            x, d, q = node.input[0], node.input[1], node.output[0]
            print(f"GDN {node.name}: max|{x}| {g[x].max_abs:.3g}, |{d}| in "
                  f"[{g[d].min_abs:.3g}, {g[d].max_abs:.3g}], max|{q}| {g[q].max_abs:.3g}")


def print_plans(plans: dict[str, dict[str, str]], limit: float) -> None:
    print(f"\n## 2. Nodes kept FP32 (range rule: max |x| > {limit:g})\n")
    for file, plan in plans.items():
        reasons: dict[str, list[str]] = {}
        for node, why in plan.items():
            reasons.setdefault(why.split(" of ")[0], []).append(node)
        text = "; ".join(f"{why}: {', '.join(n[:6]) + (' …' if len(n) > 6 else '')}"
                         f" ({len(n)})" for why, n in reasons.items()) or "none"
        print(f"{fp16_file(file):<27} {len(plan):>3} FP32: {text}")


def stage_errors(model, fp16_dir: Path, images, tables, threads: int) -> None:
    runners = {"onnxruntime FP16 graphs": ort_runner(fp16_dir, threads),
               "PyTorch FP16": torch_runner(half_model(model), torch.float16),
               "PyTorch all FP16": torch_runner(half_model(model, False), torch.float16)}
    worst: dict[tuple, list] = {}
    for _, x, _ in images:
        refs = reference_io(model, x)
        for label, run in runners.items():
            for stage, (inputs, expected) in refs.items():
                if label.endswith("all FP16") and stage not in ("g_a", "anchor", "nonanchor"):
                    continue
                for name, value in run(stage, **inputs).items():
                    err = float(np.abs(value - expected[name]).max())
                    flips = (float(np.mean(tables.scale_index(value)
                                           != tables.scale_index(expected[name])))
                             if name == "scale" else float("nan"))
                    w = worst.setdefault((label, stage, name), [0.0, 0.0, 0.0])
                    w[:] = [max(w[0], err), max(w[1], float(np.abs(expected[name]).max())),
                            max(w[2], flips) if name == "scale" else float("nan")]
    print("\n## 3. Max |error| per stage output against FP32 PyTorch (FP32 inputs)\n")
    print(f"{'runtime':<26}{'stage':<11}{'output':<11}{'max_abs':>10}{'max|ref|':>10}"
          f"{'index flips':>13}")
    for (label, stage, name), (err, ref, flips) in worst.items():
        f = "" if np.isnan(flips) else f"{100 * flips:.3f} %"
        print(f"{label:<26}{stage:<11}{name:<11}{err:>10.3g}{ref:>10.3g}{f:>13}")


def sampling_precision(model, name: str, rgb: np.ndarray, scales=(1, 2, 4)) -> None:
    """g_a's y error with the deformable sampling in FP32 (as the graphs) and with FP16
    positions, on ``rgb`` upscaled (bicubic): FP16 positions coarsen as images grow."""
    print(f"\n## 3b. g_a with FP32 sampling vs FP16 sampling positions, {name} upscaled (max |y| error)\n")
    ref = torch_runner(model, torch.float32)
    runs = {"sampling FP32": torch_runner(half_model(model), torch.float16),
            "positions FP16": torch_runner(half_model(model, False), torch.float16)}
    print(f"{'size':<12}{'max|y|':>8}" + "".join(f"{k + ' max':>20}{'mean':>10}" for k in runs))
    for s in scales:
        big = Image.fromarray(rgb).resize((rgb.shape[1] * s, rgb.shape[0] * s), Image.BICUBIC)
        x = model_input(np.asarray(big))
        y = ref("g_a", image=x)["y"]
        errs = [np.abs(r("g_a", image=x)["y"] - y) for r in runs.values()]
        print(f"{x.shape[3]}x{x.shape[2]:<7}{np.abs(y).max():>8.3g}"
              + "".join(f"{e.max():>20.3g}{e.mean():>10.2g}" for e in errs), flush=True)


def pipeline_psnr(model, images) -> None:
    fp32, fp16 = torch_runner(model, torch.float32), torch_runner(half_model(model), torch.float16)
    print("\n## 4. Whole pipeline, PyTorch FP16 vs FP32 (PSNR in dB on the 8-bit images)\n")
    print(f"{'image':<14}{'fp16 vs fp32':>13}{'fp32 vs orig':>14}{'fp16 vs orig':>14}"
          f"{'delta':>8}{'symbols differ':>16}")
    rows = []
    for name, x, rgb in images:
        h, w = rgb.shape[:2]
        r32, s32 = code(fp32, x)
        r16, s16 = code(fp16, x)
        r32, r16 = r32[:h, :w], r16[:h, :w]
        row = (psnr(r16, r32), psnr(r32, rgb), psnr(r16, rgb), float(np.mean(s16 != s32)))
        rows.append(row)
        print(f"{name:<14}{row[0]:>13.2f}{row[1]:>14.3f}{row[2]:>14.3f}{row[2] - row[1]:>+8.3f}"
              f"{100 * row[3]:>14.3f} %", flush=True)
    m = np.mean(rows, axis=0)
    print(f"{'mean':<14}{m[0]:>13.2f}{m[1]:>14.3f}{m[2]:>14.3f}{m[2] - m[1]:>+8.3f}"
          f"{100 * m[3]:>14.3f} %")
    print(f"min fp16 vs fp32: {min(r[0] for r in rows):.2f} dB; largest PSNR drop "
          f"(fp32 vs orig - fp16 vs orig): {max(r[1] - r[2] for r in rows):+.3f} dB")


def load_images(folder: Path, limit: int):
    """(name, (1, 3, H', W') float32 padded, (H, W, 3) uint8) per PNG."""
    out = []
    for path in sorted(folder.glob("*.png"))[:limit]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        out.append((path.name, model_input(rgb), rgb))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR)
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--threads", type=int, default=0, help="torch and onnxruntime threads")
    p.add_argument("--margin", type=float, default=4.0, help="FP32 above 65504 / margin")
    p.add_argument("--ranges-out", type=Path, help="save the measured ranges (JSON)")
    args = p.parse_args(argv)
    images = load_images(args.folder, args.limit)
    if not images:
        print(f"no PNG images in {args.folder}", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    model, digest = load_model(args.model)[0], file_hash(args.model)
    print(f"# FP16 graphs: model {args.model.name} ({digest[:16]}), {len(images)} images from "
          f"{args.folder.name}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory(prefix="fastlic-fp16-") as tmp:
        out = Path(tmp)
        export_model(model, out, weights_sha256=digest, check=False)
        ranges = measure_ranges(model, out, FILES, [(n, x) for n, x, _ in images], digest,
                                args.threads)
        if args.ranges_out:
            ranges.save(args.ranges_out)
        print_ranges(ranges, out)
        plans = {f: write_fp16(out / f, out / fp16_file(f), ranges.graphs[f], args.margin)
                 for f in FILES}
        print_plans(plans, FP16_MAX / args.margin)
        stage_errors(model, out, images, read_shipped(args.model).tables, args.threads)
    sampling_precision(model, images[0][0], images[0][2])
    pipeline_psnr(model, images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
