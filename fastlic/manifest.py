"""``manifest.json`` of an exported model directory: what each graph is and how well it matched.

Layout of a directory written by :func:`fastlic.export.export_model`::

    manifest.json          this file's Manifest
    weights.safetensors    the shipped weights file exported (when exported from a file):
                           model identity (name, hash, quality) and entropy tables for
                           a runtime Codec; its sha256 is ``weights_sha256``
    g_a.onnx               DeformConv variant (TensorRT, onnxruntime >= 1.25)
    g_a_gridsample.onnx    GridSample variant (onnxruntime without a DeformConv kernel)
    h_a.onnx g_s.onnx
    h_s.onnx anchor.onnx nonanchor.onnx
                           the exact stages (integer arithmetic in MatMul and float64
                           elementwise ops, docs/exact.md); every engine runs these
    g_s_col2im.onnx        pixel shuffles as Col2Im (onnxruntime's CPU choice; the
                           default file writes them as ConvTranspose for TensorRT)
    *_fp16.onnx            with ``export --fp16``: FP16 variant of g_a, h_a and g_s
                           (FP32 inputs/outputs, :mod:`fastlic.export.fp16`)
    fp16_ranges.json       with ``--fp16``: the activation ranges its FP32 nodes follow

``Manifest.engines`` says which file each engine runs per stage; an FP16 graph is
listed with ``precision="fp16"`` and the ``source`` file it was converted from. Only the standard
library is imported here, so an engine can read a manifest without torch or onnx.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from .stages import STAGES
from .errors import ManifestError

# 2: anchor.onnx and nonanchor.onnx compute only their pass's positions and write
#    zeros at the other's (fastlic.model.packed; 1 computed every position); pixel
#    shuffles are grouped ConvTranspose nodes instead of DepthToSpace.
# 3: <stage>_col2im.onnx of h_s, anchor, nonanchor, g_s (pixel shuffles as Col2Im),
#    onnxruntime's files.
# 4: h_s, anchor and nonanchor are the exact stages (fastlic.model.exact: integer
#    arithmetic, outputs ``index`` and ``mean``), one file each, no FP16 twin; only g_s
#    has a Col2Im variant.
FORMAT_VERSION = 5
MANIFEST_NAME = "manifest.json"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: ONNX name, dtype ("float32") and shape (ints or symbols)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclasses.dataclass(frozen=True)
class OutputError:
    """Largest difference from PyTorch over all validation photos.

    max_abs = max |onnx - torch|; max_rel = max |onnx - torch| / max(|torch|, atol);
    max_ref = max |torch| (the scale the errors compare with).
    """

    max_abs: float
    max_rel: float
    max_ref: float


@dataclasses.dataclass(frozen=True)
class GraphInfo:
    """One ONNX file. ``checked_on`` names the runtime that ran it against PyTorch
    ("" if it was not run; ``note`` then says why). ``fp32_nodes``: node name -> why it
    stays FP32 (FP32 graphs: in an FP16 build by TensorRT). FP16 graphs: ``precision``
    "fp16", ``source`` the FP32 file converted."""

    stage: str
    file: str
    variant: str
    sha256: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    errors: dict[str, OutputError]
    checked_on: str = ""
    note: str = ""
    precision: str = "fp32"
    source: str = ""
    fp32_nodes: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Manifest:
    model_name: str
    model_config: str            # ModelConfig.to_json()
    weights_sha256: str
    opset: int
    versions: dict[str, str]     # torch, onnx, onnxruntime, onnxscript
    photos: tuple[str, ...]      # validation images, "name HxW xB"
    rtol: float
    atol: float
    graphs: tuple[GraphInfo, ...]
    engines: dict[str, dict[str, str]]   # engine -> stage -> file
    weights_file: str = ""       # copy of the weights file in the directory ("" if none)
    fp16_ranges: str = ""        # activation ranges of the FP16 conversion ("" if none)
    format_version: int = FORMAT_VERSION

    def graph(self, file: str) -> GraphInfo:
        for g in self.graphs:
            if g.file == file:
                return g
        raise ManifestError(f"manifest lists no graph file {file!r}")

    def candidates(self, engine: str, stage: str, precision: str = "fp32") -> list[GraphInfo]:
        """Graphs of ``stage`` in ``precision`` for ``engine``: its chosen file (or, for
        "fp16", the one converted from it) first, then other variants."""
        chosen = self.engines.get(engine, {}).get(stage)
        same = [g for g in self.graphs if g.stage == stage and g.precision == precision]
        return sorted(same, key=lambda g: (g.source or g.file) != chosen)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        graphs = tuple(GraphInfo(
            **{**g, "inputs": _tensors(g["inputs"]), "outputs": _tensors(g["outputs"]),
               "errors": {k: OutputError(**v) for k, v in g["errors"].items()}})
            for g in data["graphs"])
        return cls(**{**data, "graphs": graphs, "photos": tuple(data["photos"])})


def _tensors(items: list[dict]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(t["name"], t["dtype"], tuple(t["shape"])) for t in items)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_signature(path: str | Path) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """Graph inputs and outputs of an ONNX file (needs the ``onnx`` package)."""
    import onnx  # noqa: PLC0415 - only the exporter needs it

    graph = onnx.load(str(path), load_external_data=False).graph

    def info(value) -> TensorInfo:
        t = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return TensorInfo(value.name, dtype,
                          tuple(d.dim_param or d.dim_value for d in t.shape.dim))

    return tuple(map(info, graph.input)), tuple(map(info, graph.output))


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    path = Path(directory) / MANIFEST_NAME
    path.write_text(manifest.to_json() + "\n")
    return path


def load_manifest(directory: str | Path, verify: bool = True) -> Manifest:
    """Read ``manifest.json``; with ``verify``, check every graph file's sha256 and the
    tensor names against :data:`fastlic.engines.STAGES`. Raises ManifestError naming
    every problem."""
    directory = Path(directory)
    try:
        manifest = Manifest.from_dict(json.loads((directory / MANIFEST_NAME).read_text()))
    except FileNotFoundError:
        raise ManifestError(f"{directory} has no {MANIFEST_NAME}; run `fastlic export --out "
                            f"{directory}` first") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{directory / MANIFEST_NAME} is malformed ({exc}); "
                            "export the model again") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise ManifestError(f"manifest format {manifest.format_version} is not supported "
                            f"(this build reads {FORMAT_VERSION}); export the model again")
    problems = [p for g in manifest.graphs for p in _graph_problems(directory, g, verify)]
    problems += _weights_problems(directory, manifest, verify)
    if problems:
        raise ManifestError(f"{directory}: " + "; ".join(problems)
                            + "; export the model again")
    return manifest


def _graph_problems(directory: Path, g: GraphInfo, verify: bool) -> list[str]:
    spec = STAGES.get(g.stage)
    if spec is None:
        return [f"{g.file}: unknown stage {g.stage!r}"]
    problems = []
    names = (tuple(t.name for t in g.inputs), tuple(t.name for t in g.outputs))
    if names != (spec.inputs, spec.outputs):
        problems.append(f"{g.file}: tensors {names} are not {(spec.inputs, spec.outputs)}")
    path = directory / g.file
    if not path.is_file():
        problems.append(f"{g.file} is missing")
    elif verify and sha256_file(path) != g.sha256:
        problems.append(f"{g.file} sha256 differs from the manifest (modified or corrupt)")
    return problems


def _weights_problems(directory: Path, manifest: Manifest, verify: bool) -> list[str]:
    if not manifest.weights_file:
        return []
    path = directory / manifest.weights_file
    if not path.is_file():
        return [f"{manifest.weights_file} is missing"]
    if verify and sha256_file(path) != manifest.weights_sha256:
        return [f"{manifest.weights_file} sha256 differs from the manifest's weights_sha256"]
    return []
