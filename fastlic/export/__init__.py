"""``fastlic export``: write a model directory of ONNX graphs plus ``manifest.json``.

::

    FastLIC ──export_stage──▶ g_a.onnx (DeformConv), g_a_gridsample.onnx,
                              h_a, h_s, anchor, nonanchor, g_s .onnx,
                              *_col2im.onnx of h_s, anchor, nonanchor, g_s
                              (pixel shuffles as Col2Im: onnxruntime's choice)
            ──check_graphs──▶ onnxruntime CPU vs PyTorch on photos (errors per output)
            ──write_manifest─▶ manifest.json (hashes, signatures, errors, engine files)
    --fp16: ranges ──▶ *_fp16.onnx (FP16, FP32 I/O; fp16.py), fp16_ranges.json
    weights file ──copy──▶ weights.safetensors (identity and entropy tables, if given)

All mismatches beyond tolerance are collected and raised as one
:class:`~fastlic.errors.ExportMismatchError`; the manifest is written only when every
graph matches. torch and onnx are imported only when exporting, so
:func:`load_manifest` works without them; without the ``export`` extra, exporting is a
:class:`~fastlic.errors.MissingExtraError` before anything is written. The graphs are
written into a temporary sibling of the output folder, which takes its place only when
the export succeeded (:func:`_staged`): a failure leaves no partial directory.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .. import errors
from ..errors import ExportError, FastlicError, ModelLoadError
from ..manifest import (MANIFEST_NAME, GraphInfo, Manifest, OutputError, load_manifest,
                       write_manifest)
from .ranges import RANGES_NAME
from ..stages import EXACT_STAGES, STAGES

WEIGHTS_FILE = "weights.safetensors"

__all__ = ["export_model", "load_manifest", "Manifest", "GraphInfo", "OutputError",
           "state_dict_sha256", "main", "WEIGHTS_FILE"]


def state_dict_sha256(model) -> str:
    """sha256 over (name, dtype, shape, bytes) of every state-dict tensor, sorted by name."""
    import torch  # noqa: PLC0415

    digest = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


COL2IM_STAGES = ("g_s",)   # the stage with pixel shuffles (the exact stages reshape instead)


def _plan(gridsample: bool, col2im: bool = True) -> list[tuple[str, str, str]]:
    """(stage, file, variant) of every graph to write."""

    plan = [(s, f"{s}.onnx", "deformconv") for s in STAGES]
    if gridsample:
        plan.insert(1, ("g_a", "g_a_gridsample.onnx", "gridsample"))
    if col2im:
        plan += [(s, f"{s}_col2im.onnx", "col2im") for s in COL2IM_STAGES]
    return plan


def require_export_packages(onnxruntime: bool = True) -> None:
    """MissingExtraError unless onnx and onnxscript (and, for the check and the FP16
    graphs, onnxruntime) import: the ``export`` extra."""
    from ..engines import require_extra  # noqa: PLC0415

    modules = ("onnx", "onnxscript") + (("onnxruntime",) if onnxruntime else ())
    require_extra("export", *modules, what="exporting to ONNX")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    out = {}
    for pkg in ("torch", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = ""
    return out


def _engine_files(plan, checks) -> dict[str, dict[str, str]]:
    """TensorRT runs the default graphs. onnxruntime runs the Col2Im variants where
    written, and g_a.onnx; where its check could not run a file here, the other
    variant (the engine falls back at load time too)."""
    deform = {s: f for s, f, v in plan if v == "deformconv"}
    ort = dict(deform)
    ran = (lambda f: f in checks and checks[f].checked_on) if checks else (lambda f: True)
    for stage, file, variant in plan:
        if variant == "col2im" and ran(file):
            ort[stage] = file
    if checks and not ran("g_a.onnx") and "g_a_gridsample.onnx" in checks:
        ort["g_a"] = "g_a_gridsample.onnx"
    return {"onnxruntime": ort, "tensorrt": dict(deform)}


def format_table(graphs) -> str:
    """The error table: one row per graph output."""
    head = f"{'graph':<26}{'output':<11}{'max_abs':>10}{'max_rel':>10}{'max|ref|':>10}"
    rows = [head + "  checked on"]
    for g in graphs:
        if not g.errors:
            rows.append(f"{g.file:<26}{'-':<11}{'-':>10}{'-':>10}{'-':>10}  not run: {g.note}")
        for name, e in g.errors.items():
            rows.append(f"{g.file:<26}{name:<11}{e.max_abs:>10.2e}{e.max_rel:>10.2e}"
                        f"{e.max_ref:>10.2e}  {g.checked_on}")
    return "\n".join(rows)


def export_model(model, out_dir: str | Path, *, weights_sha256: str | None = None,
                 weights_file: str | Path | None = None, opset: int = 19,
                 check: bool = True, gridsample: bool = True, col2im: bool = True,
                 rtol: float = 1e-3, atol: float = 1e-4, threads: int = 0,
                 log=None, fp16: bool = False, fp16_ranges=None, fp16_images=None,
                 fp16_margin: float = 4.0) -> Manifest:
    """Export every stage of ``model`` (a FastLIC) to ``out_dir`` and write the manifest.

    weights_sha256: hash of the weights file; default: :func:`state_dict_sha256`.
    weights_file: the .safetensors ``model`` was loaded from; copied into ``out_dir`` as
        ``weights.safetensors`` (a runtime Codec reads identity and tables from it) and
        its sha256 becomes ``weights_sha256``.
    check: run each graph in onnxruntime (CPU) on photos against PyTorch.
    gridsample: also write ``g_a_gridsample.onnx`` (no DeformConv node).
    col2im: also write ``<stage>_col2im.onnx`` of the stages with pixel shuffles
        (onnxruntime's files; :mod:`fastlic.export.graphs`).
    log: called with one line of progress per graph, then the error table.
    fp16: also write ``<stem>_fp16.onnx`` per graph (:mod:`fastlic.export.fp16`; the
        graphs take and return float32), keeping FP32 where the activation ranges exceed
        65504 / ``fp16_margin``. ``fp16_ranges``: a Ranges or JSON file measured before
        (:mod:`fastlic.export.ranges`); else they are measured on ``fp16_images``
        ((label, (B, 3, H, W) float32) pairs), else on the check photos.
    """
    require_export_packages(onnxruntime=check or fp16)
    log = log or (lambda line: None)
    with _staged(Path(out_dir)) as out:   # written beside out_dir, renamed at the end
        from .check import check_graphs, photo_batches, raise_on_mismatch  # noqa: PLC0415 - torch
        from ..manifest import read_signature, sha256_file  # noqa: PLC0415

        if weights_file is not None:
            weights_sha256 = _copy_weights(Path(weights_file), out, weights_sha256)
        weights_sha256 = weights_sha256 or state_dict_sha256(model)
        model = copy.deepcopy(model).float().cpu().eval()
        from ..modelfile import exact_model  # noqa: PLC0415
        model = exact_model(model)   # an in-memory float model: its exact stages first
        plan = _plan(gridsample, col2im)
        _export_all(model, out, plan, opset, log)
        batches = photo_batches() if check else []
        checks = check_graphs(model, out, {f: s for s, f, _ in plan}, batches, rtol, atol,
                              threads) if check else {}
        graphs = tuple(GraphInfo(stage, file, variant, sha256_file(out / file),
                                 *read_signature(out / file), **_check_fields(checks.get(file)),
                                 fp32_nodes=_fp32_plan(out / file, stage))
                       for stage, file, variant in plan)
        raise_on_mismatch(checks)
        if fp16:   # for GPU engines, which run the default graphs
            # the exact stages are integers in float32/float64 on every engine: no FP16 twin
            gpu_plan = [p for p in plan if p[2] != "col2im" and p[0] not in EXACT_STAGES]
            graphs += _export_fp16(model, out, gpu_plan, weights_sha256, fp16_ranges, fp16_images,
                                   fp16_margin, batches, threads, log)
        if check:
            log(format_table(graphs))
        manifest = Manifest(
            model_name=model.cfg.name, model_config=model.cfg.to_json(),
            weights_sha256=weights_sha256, opset=opset, versions=_versions(),
            photos=tuple(b.label for b in batches), rtol=rtol, atol=atol,
            graphs=graphs, engines=_engine_files(plan, checks),
            weights_file=WEIGHTS_FILE if weights_file is not None else "",
            fp16_ranges=RANGES_NAME if fp16 else "")
        write_manifest(out, manifest)
        return manifest


def _new_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those it created, deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


@contextlib.contextmanager
def _staged(out: Path):
    """A temporary folder beside ``out`` to export into; it becomes ``out`` when the
    block succeeds (:func:`_install`). On any failure it is removed, with the parent
    folders made for it, and ``out`` is as it was."""
    if out.exists() and not out.is_dir():
        raise errors.OutputError(f"{out} is a file, not a folder; pick another --out")
    try:
        created = _new_folders(out.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    except OSError as exc:
        raise errors.OutputError(f"cannot write into {out.parent}: {exc.strerror or exc}; "
                                 "pick another --out") from None
    try:
        yield tmp
        _install(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _install(tmp: Path, out: Path) -> None:
    """The finished export ``tmp`` becomes ``out``: renamed over a missing or empty
    folder; moved file by file into one with files (its old manifest removed first and
    the new one moved last, so the folder never pairs a manifest with other graphs)."""
    from ..runtime.image import umask  # noqa: PLC0415

    os.chmod(tmp, (os.stat(out).st_mode & 0o7777) if out.is_dir() else 0o777 & ~umask())
    if not out.is_dir() or (not out.is_symlink() and not any(out.iterdir())):
        os.replace(tmp, out)
        return
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    for name in sorted(os.listdir(tmp), key=lambda n: n == MANIFEST_NAME):
        os.replace(tmp / name, out / name)
    tmp.rmdir()


def _export_fp16(model, out, plan, weights_sha256, ranges, images, margin, batches,
                 threads, log) -> tuple[GraphInfo, ...]:
    from .check import reference_io  # noqa: PLC0415 - imports torch
    from .fp16 import export_fp16  # noqa: PLC0415
    from .ranges import resolve_ranges  # noqa: PLC0415

    ranges = resolve_ranges(model, out, {f: s for s, f, _ in plan}, ranges, images,
                            weights_sha256, threads, log)
    refs = [reference_io(model, b.image) for b in batches]
    return export_fp16(out, plan, ranges, margin, refs, threads, log)


def _copy_weights(src: Path, out: Path, expected: str | None) -> str:
    """Copy the weights file into ``out``; returns its sha256 (checked against ``expected``)."""
    import shutil  # noqa: PLC0415

    from ..manifest import sha256_file  # noqa: PLC0415

    if not src.is_file():
        raise ModelLoadError(f"no weights at {src}; pass the .safetensors the model came from")
    shutil.copyfile(src, out / WEIGHTS_FILE)
    digest = sha256_file(out / WEIGHTS_FILE)
    if expected and expected != digest:
        raise ExportError(f"{src} has sha256 {digest[:16]}…, not the given {expected[:16]}…")
    return digest


def _export_all(model, out: Path, plan, opset: int, log) -> None:
    from .graphs import export_stage  # noqa: PLC0415 - imports torch

    for stage, file, variant in plan:
        start = time.perf_counter()
        try:
            export_stage(model, stage, out / file, opset=opset, variant=variant)
        except (ValueError, OSError):
            raise
        except Exception as exc:  # noqa: BLE001 - torch.onnx / onnx checker failures
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            raise ExportError(f"exporting stage {stage} ({variant}) failed: "
                              f"{type(exc).__name__}: {first}") from exc
        log(f"exported {file:<22} stage {stage:<10} {variant:<11}"
            f" {time.perf_counter() - start:5.1f} s")


def _fp32_plan(path: Path, stage: str) -> dict[str, str]:
    """The nodes an FP16 build of this FP32 graph keeps in FP32 (constants, sampling; no
    range rule: that needs measured ranges, :mod:`.fp16`), for TensorRT's builder to read
    from the manifest. None for the exact stages, which no engine runs in FP16."""
    if stage in EXACT_STAGES:
        return {}
    import onnx  # noqa: PLC0415 - export extra, checked on entry

    from .fp16 import plan_fp16  # noqa: PLC0415
    return plan_fp16(onnx.load(str(path)), None)


def _check_fields(result) -> dict:
    if result is None:
        return {"errors": {}, "checked_on": "", "note": "not checked (--no-check)"}
    return {"errors": result.errors, "checked_on": result.checked_on, "note": result.note}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastlic export", description=__doc__.splitlines()[0],
                                epilog="Use the directory with: fastlic compress/decompress "
                                       "--backend onnxruntime --model-dir OUT")
    p.add_argument("--out", required=True, type=Path, help="model directory to write")
    p.add_argument("--model", type=Path,
                   help="weights (.safetensors); default: the shipped quality-3 model")
    p.add_argument("--opset", type=int, default=19, help="ONNX opset, 19 or newer")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    p.add_argument("--no-gridsample", action="store_true",
                   help="do not write g_a_gridsample.onnx (the DeformConv-free g_a)")
    p.add_argument("--no-col2im", action="store_true",
                   help="do not write the *_col2im.onnx graphs (onnxruntime then runs the "
                        "default ones, written for TensorRT)")
    p.add_argument("--fp16", action="store_true",
                   help="also write FP16 graphs *_fp16.onnx (float32 inputs/outputs) and "
                        "fp16_ranges.json")
    p.add_argument("--fp16-ranges", type=Path, metavar="JSON",
                   help="activation ranges measured before (benchmarks/fp16.py --ranges-out)")
    p.add_argument("--fp16-images", type=Path, metavar="DIR",
                   help="measure the ranges on these PNGs (e.g. Kodak), padded as the codec "
                        "pads; default: the check photos")
    p.add_argument("--fp16-limit", type=int, help="at most this many --fp16-images")
    p.add_argument("--triton", type=Path, metavar="REPO",
                   help="also write a Triton Inference Server model repository of the export "
                        "into REPO (fastlic.serving.triton; needs pip install "
                        '"fastlic[triton]" to validate its configs)')
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--atol", type=float, default=1e-4)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.fp16_ranges or args.fp16_images) and not args.fp16:
        parser.error("--fp16-ranges and --fp16-images need --fp16")
    if args.fp16_ranges and args.fp16_images:
        parser.error("give --fp16-ranges or --fp16-images, not both")
    if args.opset < 19:
        parser.error(f"--opset {args.opset}: DeformConv needs opset 19 or newer")
    try:
        require_export_packages(onnxruntime=not args.no_check or args.fp16)
        from ..modelfile import file_hash, load_model, shipped_weights  # noqa: PLC0415
        from .ranges import png_images  # noqa: PLC0415

        args.model = args.model or shipped_weights()
        if not args.model.is_file():
            raise ModelLoadError(f"no weights at {args.model}; pass --model PATH")
        model, _, _ = load_model(args.model)
        images = png_images(args.fp16_images, args.fp16_limit) if args.fp16_images else None
        manifest = export_model(model, args.out, weights_sha256=file_hash(args.model),
                                weights_file=args.model, opset=args.opset,
                                check=not args.no_check,
                                gridsample=not args.no_gridsample,
                                col2im=not args.no_col2im, rtol=args.rtol,
                                atol=args.atol, log=print, fp16=args.fp16,
                                fp16_ranges=args.fp16_ranges, fp16_images=images)
        print(f"wrote {len(manifest.graphs)} graphs and manifest.json to {args.out}")
        if args.triton:
            from ..serving.triton import write_triton_repository  # noqa: PLC0415
            models = write_triton_repository(args.out, args.triton)
            print(f"wrote {len(models)} Triton models to {args.triton}")
    except FastlicError as exc:
        print(f"fastlic: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0
