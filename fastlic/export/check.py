"""Check exported graphs against PyTorch on real photos (scikit-image's bundled images).

Every stage is fed the inputs PyTorch itself sees when coding the photo, so errors
do not compound across stages::

    image ─g_a─▶ y ─h_a─▶ z ─round─▶ ẑ ─h_s─▶ hyper
    hyper ─anchor─▶ (index, mean)_a
    ŷ_anchor = (round(y − mean_a) + mean_a) · anchors
    (hyper, ŷ_anchor) ─nonanchor─▶ (index, mean)_n ;  ŷ ─g_s─▶ image_hat

h_s, anchor and nonanchor are the exact stages (``model.exact``): their graphs must
match bit for bit. Any other graph matches when ``|onnx − torch| <= atol + rtol ·
|torch|`` everywhere (numpy ``allclose``). Mismatches are collected, not raised here: the caller reports
them all at once.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..stages import EXACT_STAGES, STAGES
from ..model.layers import checkerboard_mask
from ..errors import ExportMismatchError
from ..runtime.image import model_input
from ..manifest import OutputError

RTOL, ATOL = 1e-3, 1e-4


@dataclasses.dataclass(frozen=True)
class PhotoBatch:
    """Validation images: ``image`` (B, 3, H, W) float32 in [0, 1], H and W multiples of 64."""

    label: str
    image: np.ndarray


@dataclasses.dataclass(frozen=True)
class GraphCheck:
    stage: str
    errors: dict[str, OutputError]
    checked_on: str            # "" when the graph could not be run
    note: str                  # why it could not be run
    mismatches: tuple[str, ...]


def _crop(photo: np.ndarray, h: int, w: int) -> np.ndarray:
    top, left = (photo.shape[0] - h) // 2, (photo.shape[1] - w) // 2
    return photo[top:top + h, left:left + w]


def photo_batches() -> list[PhotoBatch]:
    """Two sizes and batch sizes: chelsea (300x451 padded to 320x512, batch 1) and
    astronaut + coffee centre crops (384x448, batch 2)."""
    from skimage import data  # noqa: PLC0415 - heavy, validation only

    chelsea = model_input(data.chelsea())
    pair = np.concatenate([model_input(_crop(p, 384, 448))
                           for p in (data.astronaut(), data.coffee())])
    return [PhotoBatch("chelsea 320x512 x1", chelsea),
            PhotoBatch("astronaut+coffee 384x448 x2", pair)]


@torch.inference_mode()
def reference_io(model, image: np.ndarray) -> dict[str, tuple[dict, dict]]:
    """stage -> (inputs, outputs) as numpy, from running ``model`` (eval, float32, CPU;
    a model without exact stages is converted first, as export_model does)."""
    from ..modelfile import exact_model  # noqa: PLC0415
    model = exact_model(model)
    x = torch.from_numpy(image)
    y = model.analysis(x)
    z = model.hyper_analysis(y)
    z_hat = torch.round(z)
    hyper = model.exact.hyper_synthesis(z_hat)
    index_a, mean_a = model.exact.anchor_params(hyper)
    am = checkerboard_mask(y.shape[2], y.shape[3], anchor=True)
    y_hat_a = (torch.round(y - mean_a) + mean_a) * am
    index_n, mean_n = model.exact.nonanchor_params(hyper, y_hat_a)
    y_hat = y_hat_a + (torch.round(y - mean_n) + mean_n) * (1 - am)
    io = {"g_a": ({"image": x}, {"y": y}), "h_a": ({"y": y}, {"z": z}),
          "h_s": ({"z_hat": z_hat}, {"hyper": hyper}),
          # zeros at the other pass's positions, by construction (fastlic.model.exact)
          "anchor": ({"hyper": hyper}, {"index": index_a, "mean": mean_a}),
          "nonanchor": ({"hyper": hyper, "y_hat_anchor": y_hat_a},
                        {"index": index_n, "mean": mean_n}),
          "g_s": ({"y_hat": y_hat}, {"image_hat": model.synthesis(y_hat)})}
    return {s: ({k: v.numpy() for k, v in i.items()}, {k: v.numpy() for k, v in o.items()})
            for s, (i, o) in io.items()}


def _compare(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float):
    """(OutputError, within tolerance?)."""
    if actual.shape != expected.shape:
        return OutputError(float("inf"), float("inf"), float(np.abs(expected).max())), False
    diff = np.abs(actual.astype(np.float64) - expected)
    scale = np.abs(expected)
    err = OutputError(float(diff.max()), float((diff / np.maximum(scale, max(atol, 1e-12))).max()),
                      float(scale.max()))
    return err, bool(np.all(diff <= atol + rtol * scale))


def check_graph(path: Path, stage: str, refs: list[dict], rtol: float = RTOL,
                atol: float = ATOL, threads: int = 0) -> GraphCheck:
    """Run ``path`` in onnxruntime (CPU) on each reference and compare every output."""
    import onnxruntime as ort  # noqa: PLC0415 - lazy backend

    from ..engines.onnxruntime.engine import error_line, make_session  # noqa: PLC0415

    try:
        session = make_session(path, ["CPUExecutionProvider"], threads)
    except Exception as exc:  # noqa: BLE001 - e.g. NOT_IMPLEMENTED DeformConv on old ORT
        return GraphCheck(stage, {}, "", f"onnxruntime {ort.__version__} cannot load it: "
                          f"{error_line(exc)}", ())
    worst: dict[str, OutputError] = {}
    bad: dict[str, OutputError] = {}
    spec = STAGES[stage]
    if stage in EXACT_STAGES:   # integers: equal or wrong
        rtol = atol = 0.0
    for ref in refs:
        inputs, expected = ref[stage]
        actual = dict(zip(spec.outputs, session.run(list(spec.outputs), inputs)))
        for name in spec.outputs:
            err, ok = _compare(actual[name], expected[name], rtol, atol)
            worst[name] = _max(worst.get(name), err)
            if not ok:
                bad[name] = _max(bad.get(name), err)
    mismatches = tuple(f"{path.name}:{n} max_abs={e.max_abs:.3g} max_rel={e.max_rel:.3g}"
                       for n, e in bad.items())
    where = f"onnxruntime {ort.__version__} CPUExecutionProvider"
    return GraphCheck(stage, worst, where, "", mismatches)


def _max(a: OutputError | None, b: OutputError) -> OutputError:
    if a is None:
        return b
    return OutputError(*(max(x, y) for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b))))


def check_graphs(model, directory: Path, files: dict[str, str], batches: list[PhotoBatch],
                 rtol: float = RTOL, atol: float = ATOL,
                 threads: int = 0) -> dict[str, GraphCheck]:
    """file -> GraphCheck for each ``files`` entry (file name -> stage)."""
    refs = [reference_io(model, b.image) for b in batches]
    return {f: check_graph(Path(directory) / f, s, refs, rtol, atol, threads)
            for f, s in files.items()}


def raise_on_mismatch(checks: dict[str, GraphCheck]) -> None:
    """One ExportMismatchError naming every output beyond tolerance and every stage
    none of whose files ran (one g_a variant failing to load is fine if the other ran)."""
    problems = [m for c in checks.values() for m in c.mismatches]
    for stage in dict.fromkeys(c.stage for c in checks.values()):
        files = {f: c for f, c in checks.items() if c.stage == stage}
        if not any(c.checked_on for c in files.values()):
            problems += [f"{f} did not run: {c.note}" for f, c in files.items()]
    if problems:
        raise ExportMismatchError(
            f"{len(problems)} exported graph output(s) disagree with PyTorch: "
            + "; ".join(problems) + "; check the exporter and onnxruntime versions")
