"""Presenting results: a rate-distortion plot (PNG) and Markdown tables.

matplotlib is imported only by :func:`rd_plot`, and through its object API with
the Agg canvas, so nothing here changes matplotlib's global backend.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Sequence

from ..errors import FastlicError


class PlotUnavailableError(FastlicError):
    """matplotlib is not installed, so no plot can be drawn."""


def rd_plot(curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path,
            title: str | None = None, ylabel: str = "PSNR (RGB) [dB]") -> Path:
    """Write a PNG with one line per curve: name -> (bpps, qualities). Returns the path.

    Points of a curve are drawn in bpp order; an empty curve is skipped.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailableError(f"rd_plot needs matplotlib ({exc}); pip install matplotlib") from exc
    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, (bpps, quality) in curves.items():
        if len(bpps) != len(quality):
            raise ValueError(f"curve {name!r}: {len(bpps)} bpp values but {len(quality)} quality values")
        points = sorted(zip(bpps, quality))
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3, label=name)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if ax.get_lines():
        ax.legend()
    path = Path(path)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def _cell(value, digits: int) -> str:
    """One table cell: floats with ``digits`` decimals, inf/nan spelled out."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        value = float(value)
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[Sequence], columns: Sequence[str],
                   digits: int | Sequence[int] = 3) -> str:
    """A Markdown table; ``digits`` is one number of decimals, or one per column."""
    per_col = [digits] * len(columns) if isinstance(digits, int) else list(digits)
    if len(per_col) != len(columns):
        raise ValueError(f"{len(per_col)} digit counts for {len(columns)} columns")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"row {i} has {len(row)} cells, the table has {len(columns)} columns")
        cells = (_cell(v, d) for v, d in zip(row, per_col))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
