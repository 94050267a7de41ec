"""A Triton Inference Server model repository from a ``fastlic export`` directory.

    fastlic export --out EXPORT      write_triton_repository(EXPORT, REPO) writes:

    REPO/<prefix>_g_a/       config.pbtxt  1/model.onnx   platform "onnxruntime_onnx"
         <prefix>_h_a/ <prefix>_h_s/ <prefix>_anchor/ <prefix>_nonanchor/ <prefix>_g_s/
                             (g_a, h_a, g_s: 1/model.plan, "tensorrt_plan", when given)
         <prefix>_compress/  config.pbtxt  1/model.py  1/weights.safetensors   backend "python"
         <prefix>_decompress/ (the same model.py; its config says which way it codes)

The two Python models are the entry points. Each runs the codec of
:mod:`fastlic.serving.triton_model` (a copy of it is ``model.py``): the rounding, the
checkerboard passes and the range coding between the stages, with every stage a BLS
request to the stage models::

    IMAGE uint8 (H, W, C) ─▶ <prefix>_compress ─BLS─▶ g_a, h_a, h_s, anchor, nonanchor, g_s
                          ◀─ BITSTREAM uint8 (N,)  (the .flic bytes)
    BITSTREAM ─▶ <prefix>_decompress ─BLS─▶ h_s ▶ anchor ▶ pass 1 ▶ nonanchor ▶ pass 2 ▶ g_s
              ◀─ IMAGE uint8 (H, W, C)  (C = 1 for greyscale files)

Inputs, outputs and dtypes of the stage models are read from the ONNX files (``onnx``
package); dynamic axes are -1. ``max_batch_size`` is 0 everywhere: the graphs carry
their own batch axis and images differ in size. The Python models import fastlic, so
Triton's Python environment needs ``pip install fastlic`` (numpy, constriction,
safetensors, torch CPU; Python of the backend stub, 3.10 in NGC containers up to 24.x).
The g_a ONNX graph is ``g_a_gridsample.onnx`` when the export has it: Triton's
onnxruntime backend may predate DeformConv (onnxruntime 1.25).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import ExportError, FastlicError, ModelLoadError, OutputError, UsageError

PLAN_STAGES = ("g_a", "h_a", "g_s")   # the float stages; the exact ones stay on onnxruntime
ENTRY_POINTS = ("compress", "decompress")
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
WEIGHTS = "weights.safetensors"
MODEL_FILE = Path(__file__).with_name("triton_model.py")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# ONNX TensorProto element types -> Triton data types (the stage graphs use the first two)
_DATA_TYPES = {1: "TYPE_FP32", 11: "TYPE_FP64", 10: "TYPE_FP16", 16: "TYPE_BF16",
               2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64",
               9: "TYPE_BOOL"}
# the Python models' tensors: (name, data type, dims) in, then out
ENTRY_TENSORS = {
    "compress": (("IMAGE", "TYPE_UINT8", (-1, -1, -1)), ("BITSTREAM", "TYPE_UINT8", (-1,))),
    "decompress": (("BITSTREAM", "TYPE_UINT8", (-1,)), ("IMAGE", "TYPE_UINT8", (-1, -1, -1))),
}


@dataclasses.dataclass(frozen=True)
class TritonTensor:
    """One input or output of a Triton model: name, data type ("TYPE_FP32"), dims (-1: any)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TritonModel:
    """One model folder of the repository, as written."""

    name: str
    stage: str          # a stage of fastlic.stages.STAGES, or "compress" / "decompress"
    platform: str       # "onnxruntime_onnx", "tensorrt_plan" or "python" (a backend)
    file: str           # the file in the version folder 1/


def onnx_tensors(path: str | Path) -> tuple[tuple[TritonTensor, ...], tuple[TritonTensor, ...]]:
    """(inputs, outputs) of an ONNX file as Triton declares them (symbolic axes -> -1)."""
    import onnx  # noqa: PLC0415 - the export extra

    graph = onnx.load(str(path), load_external_data=False).graph

    def tensor(value) -> TritonTensor:
        t = value.type.tensor_type
        if t.elem_type not in _DATA_TYPES:
            raise ExportError(f"{path}: tensor {value.name} has ONNX element type "
                              f"{t.elem_type}, which this writer does not map to Triton")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return TritonTensor(value.name, _DATA_TYPES[t.elem_type], dims)

    initializers = {i.name for i in graph.initializer}
    inputs = tuple(tensor(v) for v in graph.input if v.name not in initializers)
    return inputs, tuple(tensor(v) for v in graph.output)


def config_text(name: str, platform: str, inputs, outputs, kind: str, count: int,
                parameters: dict[str, str] | None = None) -> str:
    """A ``config.pbtxt`` (protobuf text of Triton's ModelConfig). ``platform``:
    "onnxruntime_onnx" or "tensorrt_plan", or "python" (written as ``backend``)."""
    field = "backend" if platform == "python" else "platform"
    lines = [f'name: "{name}"', f'{field}: "{platform}"', "max_batch_size: 0"]
    for key, tensors in (("input", inputs), ("output", outputs)):
        for t in tensors:
            lines += [f"{key} {{", f'  name: "{t.name}"', f"  data_type: {t.data_type}",
                      f"  dims: [ {', '.join(map(str, t.dims))} ]", "}"]
    lines += ["instance_group {", f"  count: {count}", f"  kind: {kind}", "}"]
    for key, value in (parameters or {}).items():
        lines += ["parameters {", f'  key: "{key}"', f'  value: {{ string_value: "{value}" }}',
                  "}"]
    return "\n".join(lines) + "\n"


def write_triton_repository(export_dir: str | Path, out_dir: str | Path, *,
                            prefix: str = "fastlic", plans: dict[str, str | Path] | None = None,
                            gridsample: bool | None = None, kind: str = "cpu",
                            instances: int = 1, coder_instances: int = 1,
                            checksum: bool = True, force: bool = False) -> list[TritonModel]:
    """Write the models of ``export_dir`` (a ``fastlic export`` folder with its weights
    copy) into the Triton model repository ``out_dir`` (created; other models in it stay).

    prefix: the models are ``<prefix>_<stage>``, ``<prefix>_compress``, ``<prefix>_decompress``
        (one prefix per model of a ladder, e.g. ``fastlic_q3``).
    plans: stage -> TensorRT plan built from that stage's graph (g_a, h_a, g_s only:
        h_s, anchor and nonanchor stay ONNX, whose integer arithmetic every runtime
        reproduces); those models become ``tensorrt_plan`` on KIND_GPU.
    gridsample: g_a from ``g_a_gridsample.onnx`` (None: when the export has it).
    kind: "cpu" or "gpu", the instance kind of the ONNX stage models; ``instances``
        of each; ``coder_instances`` of each Python model (CPU: range coding).
    checksum: the compress model stores the reconstruction CRC (runs g_s as well).
    force: replace model folders of the same names; else OutputError if one exists.
    """
    from ..manifest import load_manifest  # noqa: PLC0415 - stdlib only

    plans = {s: Path(p) for s, p in (plans or {}).items()}
    _check_arguments(prefix, plans, kind, instances, coder_instances)
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    manifest = load_manifest(export_dir, verify=True)
    if not manifest.weights_file:
        raise ModelLoadError(f"{export_dir} holds no weights file (model identity and "
                             f"tables); export again with `fastlic export --model WEIGHTS "
                             f"--out {export_dir}`")
    files = _stage_files(manifest, export_dir, gridsample)
    models = _plan_models(prefix, files, plans)
    _check_free(out_dir, models, force)
    with _staging(out_dir) as tmp:
        for m in models:
            if m.platform == "python":
                _write_entry(tmp, m, export_dir / manifest.weights_file, models, checksum,
                             coder_instances)
            else:
                source = plans.get(m.stage) or export_dir / files[m.stage]
                _write_stage(tmp, m, source, export_dir / files[m.stage], kind, instances)
        _install(tmp, out_dir, models)
    return models


def _check_arguments(prefix, plans, kind, instances, coder_instances) -> None:
    if not _NAME.fullmatch(prefix):
        raise UsageError(f"prefix {prefix!r} must be letters, digits, '_', '.' or '-'")
    bad = sorted(set(plans) - set(PLAN_STAGES))
    if bad:
        raise UsageError(f"TensorRT plans are for stages {list(PLAN_STAGES)}, not {bad}: "
                         "the exact stages run as ONNX")
    missing = [str(p) for p in plans.values() if not p.is_file()]
    if missing:
        raise UsageError(f"no TensorRT plan at {', '.join(missing)}")
    if kind not in KINDS:
        raise UsageError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if instances < 1 or coder_instances < 1:
        raise UsageError("instances and coder_instances must be at least 1")


def _stage_files(manifest, export_dir: Path, gridsample: bool | None) -> dict[str, str]:
    """Stage -> the ONNX file its Triton model runs: onnxruntime's choice of the manifest
    (g_s with Col2Im), g_a as GridSample where asked or available."""
    files = dict(manifest.engines.get("onnxruntime", {}))
    have = {g.file for g in manifest.graphs}
    if gridsample is None:
        gridsample = "g_a_gridsample.onnx" in have
    if gridsample:
        if "g_a_gridsample.onnx" not in have:
            raise ExportError(f"{export_dir} has no g_a_gridsample.onnx; export without "
                              "--no-gridsample, or pass gridsample=False")
        files["g_a"] = "g_a_gridsample.onnx"
    from ..stages import STAGES  # noqa: PLC0415

    missing = sorted(set(STAGES) - set(files))
    if missing:
        raise ExportError(f"{export_dir}/manifest.json names no onnxruntime graph for "
                          f"{missing}; export the model again")
    return {s: files[s] for s in STAGES}


def _plan_models(prefix: str, files: dict[str, str], plans: dict[str, Path]) -> list[TritonModel]:
    models = [TritonModel(f"{prefix}_{s}", s, "tensorrt_plan", "model.plan") if s in plans
              else TritonModel(f"{prefix}_{s}", s, "onnxruntime_onnx", "model.onnx")
              for s in files]
    return models + [TritonModel(f"{prefix}_{e}", e, "python", "model.py") for e in ENTRY_POINTS]


def _check_free(out_dir: Path, models, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} is a file, not a folder; pick another repository folder")
    taken = [m.name for m in models if (out_dir / m.name).exists()]
    if taken and not force:
        raise OutputError(f"{out_dir} already holds models {taken}; pass --force (force=True) "
                          "to replace them or pick another prefix")


def _write_stage(tmp: Path, m: TritonModel, source: Path, onnx_file: Path, kind: str,
                 count: int) -> None:
    """A stage model: the graph (or plan) in 1/, its tensors read from the ONNX file."""
    inputs, outputs = onnx_tensors(onnx_file)
    (tmp / m.name / "1").mkdir(parents=True)
    shutil.copyfile(source, tmp / m.name / "1" / m.file)
    kind = "KIND_GPU" if m.platform == "tensorrt_plan" else KINDS[kind]
    (tmp / m.name / "config.pbtxt").write_text(
        config_text(m.name, m.platform, inputs, outputs, kind, count))


def _write_entry(tmp: Path, m: TritonModel, weights: Path, models, checksum: bool,
                 count: int) -> None:
    """A Python model: model.py, the weights copy (identity, tables) and its parameters."""
    (tmp / m.name / "1").mkdir(parents=True)
    shutil.copyfile(MODEL_FILE, tmp / m.name / "1" / "model.py")
    shutil.copyfile(weights, tmp / m.name / "1" / WEIGHTS)
    params = {"operation": m.stage, "weights": WEIGHTS,
              "checksum": "true" if checksum else "false"}
    params.update({f"model_{s.stage}": s.name for s in models if s.platform != "python"})
    tensor_in, tensor_out = (TritonTensor(*t) for t in ENTRY_TENSORS[m.stage])
    (tmp / m.name / "config.pbtxt").write_text(
        config_text(m.name, "python", [tensor_in], [tensor_out], "KIND_CPU", count, params))


@contextlib.contextmanager
def _staging(out_dir: Path):
    """A temporary folder beside ``out_dir`` (same file system, outside the repository
    a running server polls) to write the models in; removed on the way out."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part",
                                    dir=out_dir.parent))
    except OSError as exc:
        raise OutputError(f"cannot write into {out_dir}: {exc.strerror or exc}; "
                          "pick another repository folder") from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, out_dir: Path, models) -> None:
    """Move each finished model folder into the repository (replacing an old one)."""
    for m in models:
        target = out_dir / m.name
        if target.exists():
            shutil.rmtree(target)
        (tmp / m.name).rename(target)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastlic triton", description=__doc__.splitlines()[0])
    p.add_argument("export_dir", type=Path, help="a `fastlic export` folder")
    p.add_argument("out", type=Path, help="the Triton model repository to write into")
    p.add_argument("--prefix", default="fastlic", help="model name prefix (default fastlic)")
    p.add_argument("--plan", action="append", default=[], metavar="STAGE=PLAN",
                   help=f"a TensorRT plan for one of {', '.join(PLAN_STAGES)} (repeatable)")
    p.add_argument("--gridsample", action=argparse.BooleanOptionalAction, default=None,
                   help="g_a as g_a_gridsample.onnx (default: when the export has it)")
    p.add_argument("--kind", choices=sorted(KINDS), default="cpu",
                   help="instance kind of the ONNX stage models")
    p.add_argument("--instances", type=int, default=1, help="instances per stage model")
    p.add_argument("--coder-instances", type=int, default=1,
                   help="instances of each Python (entropy-coding) model")
    p.add_argument("--no-checksum", action="store_true",
                   help="compress without the reconstruction CRC (no g_s run)")
    p.add_argument("--force", action="store_true", help="replace models of the same names")
    return p


def triton_main(argv: list[str] | None = None) -> int:
    """``fastlic triton EXPORT REPO``: write the repository; one line per model."""
    parser = _parser()
    args = parser.parse_args(argv)
    plans = {}
    for item in args.plan:
        stage, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--plan {item!r}: give STAGE=PATH")
        plans[stage] = path
    try:
        models = write_triton_repository(
            args.export_dir, args.out, prefix=args.prefix, plans=plans,
            gridsample=args.gridsample, kind=args.kind, instances=args.instances,
            coder_instances=args.coder_instances, checksum=not args.no_checksum,
            force=args.force)
    except FastlicError as exc:
        print(f"fastlic: error: {exc}", file=sys.stderr)
        return exc.exit_code
    for m in models:
        print(f"wrote {args.out / m.name}  ({m.platform})")
    return 0


if __name__ == "__main__":
    sys.exit(triton_main())
