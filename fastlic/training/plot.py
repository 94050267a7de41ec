"""The training curve of a run: loss, bpp and PSNR against step, from its log.csv.

Reads only ``log.csv``, so it can plot a run that is still training. matplotlib
is imported here only, through its object API with the Agg canvas.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..evaluation.report import PlotUnavailableError

PANELS = (("loss", "loss"), ("bpp", "bits per pixel"), ("psnr", "PSNR [dB]"))


def read_log(path: str | Path) -> dict[str, list[float]]:
    """log.csv -> column name -> values (float), in file order; empty cells skipped per row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}")
    cols: dict[str, list[float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("step"):
                continue
            for key, value in row.items():
                if key is not None and value not in (None, ""):
                    cols.setdefault(key, []).append(float(value))
    return cols


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the log is one noisy batch per row)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_log(run_dir: str | Path, out: str | Path | None = None, smooth: int = 10) -> Path:
    """Draw RUN_DIR/log.csv to ``out`` (default RUN_DIR/curve.png); returns the PNG path.

    One panel each for loss, bpp and PSNR (raw in light colour, moving average
    over ``smooth`` rows on top), plus one for distillation terms (columns
    starting with ``d_``) when the log has them.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailableError(f"--plot needs matplotlib ({exc}); pip install matplotlib") from exc
    run_dir = Path(run_dir)
    cols = read_log(run_dir / "log.csv")
    if "step" not in cols:
        raise ValueError(f"{run_dir / 'log.csv'} has no rows yet; plot again after 20 steps")
    terms = [k for k in cols if k.startswith("d_")]
    panels = list(PANELS) + ([("terms", "distillation terms")] if terms else [])
    fig = Figure(figsize=(5.0 * len(panels), 3.6), dpi=110)
    FigureCanvasAgg(fig)
    for i, (key, label) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), i)
        for name in (terms if key == "terms" else [key]):
            steps = cols["step"][-len(cols[name]):]
            line, = ax.plot(steps, cols[name], alpha=0.25, linewidth=0.8)
            ax.plot(steps, _smooth(cols[name], smooth), color=line.get_color(), label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if key in ("loss", "terms"):
            ax.set_yscale("log")
        if key == "terms":
            ax.legend(fontsize="small")
    fig.suptitle(run_dir.name)
    out = Path(out) if out else run_dir / "curve.png"
    fig.savefig(out, format="png", bbox_inches="tight")
    return out
