"""``fastlic profile``: where the time of one encode and one decode goes, stage by stage.

::

    image ─(repeat + 1)×─▶ compress ─▶ decompress      one StageTimer each, synchronised
          run 1 is warm-up (dropped) ─▶ medians per stage ─▶ table, JSON, bar chart

Stages are the codec's own (networks, each coding pass, padding, cropping) plus an
engine's host↔device copies (``g_a.h2d``; sub-stages, inside their parent stage).
``untimed`` is the median total minus the sum of the top-level stages: Python glue.
The JSON and the chart are written whole or not at all (:func:`~.image.write_atomic`);
the chart needs matplotlib (``pip install "fastlic[eval]"``, :func:`require_plotting`).
"""
from __future__ import annotations

import dataclasses
import io
import json
import platform
from pathlib import Path

import numpy as np

from ..runtime.image import write_atomic
from ..timing import StageTimer

TOTAL = "total"


@dataclasses.dataclass(frozen=True)
class PassProfile:
    """One direction (encode or decode): median ms per stage, in pipeline order."""

    stages: dict[str, float]
    total_ms: float

    @property
    def untimed_ms(self) -> float:
        return self.total_ms - sum(v for k, v in self.stages.items() if "." not in k)

    def share(self, stage: str) -> float:
        return self.stages[stage] / self.total_ms if self.total_ms > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class Profile:
    image: str
    width: int
    height: int
    backend: str
    device: str
    repeat: int
    bytes: int
    encode: PassProfile
    decode: PassProfile
    engines: dict[str, str] = dataclasses.field(default_factory=dict)   # stage -> what runs it

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("image", "width", "height", "backend", "device",
                                             "repeat", "bytes", "engines")}
        out["bpp"] = 8 * self.bytes / (self.width * self.height)
        out["host"] = platform.processor() or platform.machine()
        for name, p in (("encode", self.encode), ("decode", self.decode)):
            out[name] = {"total_ms": p.total_ms, "untimed_ms": p.untimed_ms,
                         "stages": {k: {"median_ms": v, "share": p.share(k)}
                                    for k, v in p.stages.items()}}
        return out


def _pass(timer: StageTimer) -> PassProfile:
    medians = timer.medians_ms(drop_first=1)
    total = medians.pop(TOTAL)
    return PassProfile(medians, total)


def profile_codec(codec, image: np.ndarray, repeat: int = 5, name: str = "",
                  checksum: bool = True) -> Profile:
    """Compress (with ``checksum``) and decompress ``image`` ``repeat`` + 1 times; the
    first run is dropped."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    enc, dec = StageTimer(codec.synchronize), StageTimer(codec.synchronize)
    for _ in range(repeat + 1):
        with enc.stage(TOTAL):
            data = codec.compress(image, timer=enc, checksum=checksum)
        with dec.stage(TOTAL):
            codec.decompress(data, timer=dec)
    engines = {stage: engine.describe() for stage, engine in codec.engines.items()}
    return Profile(name, image.shape[1], image.shape[0], codec.backend, codec.device, repeat,
                   len(data), _pass(enc), _pass(dec), engines)


def format_table(p: Profile) -> str:
    """Encode and decode stages: median ms and share of the median total."""
    lines = [f"{p.image} {p.width}x{p.height}, {p.bytes} bytes, backend {p.backend} on "
             f"{p.device}, medians of {p.repeat} runs (warm-up dropped)"]
    lines += [f"  {stage:<10} {what}" for stage, what in p.engines.items()]
    for title, pp in (("encode", p.encode), ("decode", p.decode)):
        lines.append(f"\n{title + ' stage':<30}{'ms':>10}{'share':>8}")
        for stage, ms in pp.stages.items():
            label = ("    " if "." in stage else "  ") + stage
            lines.append(f"{label:<30}{ms:>10.3f}{100 * pp.share(stage):>7.1f}%")
        lines.append(f"{'  untimed (glue)':<30}{pp.untimed_ms:>10.3f}"
                     f"{100 * pp.untimed_ms / pp.total_ms:>7.1f}%")
        lines.append(f"{'  total':<30}{pp.total_ms:>10.3f}{100.0:>7.1f}%")
    return "\n".join(lines)


def write_json(p: Profile, path: str | Path) -> None:
    """The profile as JSON, replacing a regular file at ``path`` (OutputError otherwise)."""
    write_atomic(path, (json.dumps(p.to_dict(), indent=2) + "\n").encode(), force=True)


def require_plotting() -> None:
    """MissingExtraError unless matplotlib imports (the ``eval`` extra); call it before
    the profiling run, so a missing package costs no time."""
    from ..engines import require_extra  # noqa: PLC0415

    require_extra("eval", "matplotlib", what="--plot")


def _halves(p: Profile) -> str:
    """" (bfloat16: g_s)"-style note of the stages that run in 16 bits, from their engines'
    descriptions (the torch engines name their dtype); "" when all run in 32."""
    found: dict[str, list[str]] = {}
    for stage, what in p.engines.items():
        for dtype in ("bfloat16", "float16"):
            if f"torch.{dtype}" in what:
                found.setdefault(dtype, []).append(stage)
                break
    return "".join(f" ({dtype}: {', '.join(stages)})" for dtype, stages in found.items())


def plot(p: Profile, path: str | Path) -> None:
    """Horizontal bar chart of the top-level stages, encode and decode side by side (PNG),
    replacing a regular file at ``path``."""
    require_plotting()
    import matplotlib  # noqa: PLC0415 - optional, plots only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    passes = (("encode", p.encode), ("decode", p.decode))
    rows = max(len(pp.stages) for _, pp in passes) + 1
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.3 * rows + 1.5))
    for ax, (title, pp) in zip(axes, passes):
        names = [k for k in pp.stages if "." not in k] + ["untimed"]
        values = [pp.stages[k] for k in names[:-1]] + [max(pp.untimed_ms, 0.0)]
        ax.barh(names[::-1], values[::-1], color="tab:blue")
        ax.set_title(f"{title}: {pp.total_ms:.2f} ms median")
        ax.set_xlabel("ms")
    fig.suptitle(f"{p.image} {p.width}x{p.height}, {p.backend} on {p.device}{_halves(p)}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue(), force=True)
