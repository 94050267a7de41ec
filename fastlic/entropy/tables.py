"""Quantized probability tables, built once per model and shipped with it.

Encoder and decoder never derive probabilities from floats per image: both read the
same integer tables (:class:`EntropyTables`), so a different engine or machine cannot
make them disagree. There are two kinds::

    y: family x scale grid      pmf[s, K + v] = P(round(y - mean) = v | scale_grid[s])
    z: one table per channel    pmf[c, K + v] = P(round(z_c) = v)   (learned prior)

Every table covers the symbols ``[-K, K]`` plus one *escape* entry for anything
outside; :mod:`fastlic.entropy.coder` codes an escaped value's payload separately.
Every entry is at least 1 and each row sums to ``PMF_TOTAL``.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from ..errors import ModelLoadError
from ..model.distributions import FAMILIES, NUM_SCALES, SCALE_MAX, SCALE_MIN, unit_cdf

PMF_TOTAL = 1 << 16       # every row sums to this; constriction codes with 24-bit precision
TAIL_MASS = 2.0 ** -16    # radius K leaves less than this much mass to the escape entry
MAX_RADIUS = 1024
Z_RADIUS = 64             # largest radius of a hyper-latent table


@dataclasses.dataclass(frozen=True)
class TableSet:
    """A set of integer PMFs over symbols [-K_i, K_i] plus one escape entry each.

    pmfs: int32 (T, L_max); row i is valid in ``[:2 * K_i + 2]`` (entry ``2 * K_i + 1``
        is the escape), zeros after. Valid entries are >= 1 and sum to ``total``.
    radius: int32 (T,), K_i.
    Both arrays are stored as read-only copies.
    """

    pmfs: np.ndarray
    radius: np.ndarray

    def __post_init__(self):
        for name, dtype in (("pmfs", np.int32), ("radius", np.int32)):
            arr = np.array(getattr(self, name), dtype=dtype)
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    @property
    def total(self) -> int:
        """The common row sum of the PMFs (an int)."""
        return int(self.pmfs[0].sum()) if len(self.pmfs) else PMF_TOTAL

    def __eq__(self, other) -> bool:
        return (isinstance(other, TableSet) and np.array_equal(self.pmfs, other.pmfs)
                and np.array_equal(self.radius, other.radius))


@dataclasses.dataclass(frozen=True)
class EntropyTables:
    """All tables of one model.

    scale_grid: float64 (S,), log-spaced from SCALE_MIN to SCALE_MAX.
    y: one TableSet (T = S, row s for scale_grid[s]) per family the model uses.
    z: TableSet with one row per hyper-latent channel (T = C).
    """

    scale_grid: np.ndarray
    y: dict[str, TableSet]
    z: TableSet

    def __post_init__(self):
        grid = np.array(self.scale_grid, dtype=np.float64)
        grid.flags.writeable = False
        object.__setattr__(self, "scale_grid", grid)
        object.__setattr__(self, "_index", _ScaleIndex(grid))

    def __eq__(self, other) -> bool:
        return (isinstance(other, EntropyTables) and np.array_equal(self.scale_grid, other.scale_grid)
                and self.y == other.y and self.z == other.z)

    def scale_index(self, scale: np.ndarray) -> np.ndarray:
        """Nearest grid point in the log domain, clipped: float32 (any shape) -> uint8 (same).

        Exact comparisons with float32 geometric midpoints of the grid, so every platform
        gets the same indices. NaN maps to some valid index.
        """
        return self._index(scale)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors to store in the model's .safetensors; every key starts with ``tables.``."""
        out = {"tables.scale_grid": torch.tensor(self.scale_grid)}
        for prefix, ts in [(f"tables.y.{f}", ts) for f, ts in self.y.items()] + [("tables.z", self.z)]:
            out[f"{prefix}.pmfs"] = torch.tensor(ts.pmfs)
            out[f"{prefix}.radius"] = torch.tensor(ts.radius)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "EntropyTables":
        """Inverse of :meth:`to_tensors`; keys not starting with ``tables.`` are ignored.

        Raises ModelLoadError if a key is missing, unknown, or the tables are inconsistent.
        """
        grid = _get(tensors, "tables.scale_grid", torch.float64, 1)
        _check_grid(grid)
        families = sorted({k.split(".")[2] for k in tensors
                           if k.startswith("tables.y.") and k.count(".") == 3})
        _check_keys(tensors, families)
        y = {f: _load_set(tensors, f"tables.y.{f}", len(grid)) for f in families}
        if not y:
            raise ModelLoadError("model file has no tables.y.* entropy tables; re-export the model")
        return cls(grid, y, _load_set(tensors, "tables.z", None))


class _ScaleIndex:
    """Maps float32 scales to grid indices with a lookup on their top 16 bits.

    The bits of a float32 order like its value, so the bucket ``bits >> 16`` (relative
    width 2**-7) holds at most one midpoint of a grid whose steps exceed 1 %: the
    lookup gives the midpoints below the bucket, one comparison adds the one inside.
    """

    def __init__(self, grid: np.ndarray):
        self.edges = np.sqrt(grid[:-1] * grid[1:]).astype(np.float32)   # (S - 1,)
        low = (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)
        lut = np.searchsorted(self.edges, low, side="right")
        lut[1 << 15:] = 0                                                 # negative or -NaN
        finite = slice(0, 0x7F80)
        if np.any(np.searchsorted(self.edges, low[1:0x7F81], side="left") - lut[finite] > 1):
            raise ModelLoadError("the scale grid steps by less than 1 %; re-export the model")
        self.lut = lut.astype(np.uint8)
        self.next_edge = np.append(self.edges, np.float32("nan"))        # NaN compares False

    def __call__(self, scale: np.ndarray) -> np.ndarray:
        scale = np.asarray(scale, dtype=np.float32)
        index = self.lut[scale.view(np.uint32) >> 16]
        index += scale >= self.next_edge[index]
        return index


def scale_grid() -> np.ndarray:
    """float64 (NUM_SCALES,), log-spaced from SCALE_MIN to SCALE_MAX."""
    return np.geomspace(SCALE_MIN, SCALE_MAX, NUM_SCALES)


def quantize_pmf(p: np.ndarray, total: int = PMF_TOTAL) -> np.ndarray:
    """float64 (L,) non-negative masses -> int32 (L,), every entry >= 1, summing to ``total``.

    Entries worth less than one unit get exactly 1; the rest share the remaining units
    in proportion to ``p`` (largest remainders round up, ties by position).
    """
    if not np.all(np.isfinite(p)) or p.sum() <= 0:
        raise ModelLoadError("a probability table is not finite or has no mass; "
                             "the model weights are broken, retrain or re-export them")
    floor = np.zeros(len(p), dtype=bool)
    for _ in range(len(p)):  # each pass floors at least one more entry, usually 1-2 passes
        budget = total - floor.sum()
        w = np.where(floor, 0.0, p)
        scaled = w * (budget / w.sum())
        low = ~floor & (scaled < 1.0)
        if not low.any():
            break
        floor |= low
    q = np.where(floor, 1.0, np.floor(scaled))
    spare = int(total - q.sum())
    frac = np.where(floor, -1.0, scaled - q)
    q[np.argsort(-frac, kind="stable")[:spare]] += 1
    return q.astype(np.int32)


def _pack(rows: list[np.ndarray], radius: list[int]) -> TableSet:
    """Quantize float64 rows (mass over [-K, K] then escape) into one zero-padded TableSet."""
    width = max(len(r) for r in rows)
    pmfs = np.zeros((len(rows), width), dtype=np.int32)
    for i, r in enumerate(rows):
        pmfs[i, :len(r)] = quantize_pmf(r)
    return TableSet(pmfs, np.array(radius, dtype=np.int32))


def _radius(outside: np.ndarray) -> int:
    """Smallest k with outside[k] < TAIL_MASS (outside: float64 (R + 1,), decreasing), else R."""
    below = outside < TAIL_MASS
    return int(np.argmax(below)) if below.any() else len(outside) - 1


def _family_rows(family: str, scale: float) -> tuple[np.ndarray, int]:
    """Masses of [-K, K] then the escape, float64 (2K + 2,), for ``family`` at ``scale``; and K."""
    v = torch.arange(MAX_RADIUS + 1, dtype=torch.float64)
    # Mass beyond +-v, from the negative half-line where the CDF is accurate.
    outside = (2 * unit_cdf(family, (-v - 0.5) / scale)).numpy()
    k = _radius(outside)
    a = torch.arange(-k, k + 1, dtype=torch.float64).abs()
    mass = unit_cdf(family, (0.5 - a) / scale) - unit_cdf(family, (-0.5 - a) / scale)
    return np.append(mass.numpy(), outside[k]), k


def _y_tables(family: str, grid: np.ndarray) -> TableSet:
    rows, radius = zip(*(_family_rows(family, float(s)) for s in grid))
    return _pack(list(rows), list(radius))


def _z_tables(prior: torch.nn.Module) -> TableSet:
    """One table per channel from the learned prior; K per channel from its tail mass."""
    support = torch.arange(-Z_RADIUS, Z_RADIUS + 1)
    p = prior.pmf(support).numpy()                           # (C, 2 * Z_RADIUS + 1)
    cum = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p, axis=1)], axis=1)
    ks = np.arange(Z_RADIUS + 1)
    outside = np.maximum(1.0 - (cum[:, Z_RADIUS + ks + 1] - cum[:, Z_RADIUS - ks]), 0.0)
    rows, radius = [], []
    for row, out in zip(p, outside):
        k = _radius(out)
        rows.append(np.append(row[Z_RADIUS - k:Z_RADIUS + k + 1], out[k]))
        radius.append(k)
    return _pack(rows, radius)


@torch.no_grad()
def build_tables(model) -> EntropyTables:
    """Deterministic float64 tables of ``model`` (a :class:`fastlic.model.FastLIC`)."""
    families = dict.fromkeys((model.cfg.anchor_family, model.cfg.nonanchor_family))
    grid = scale_grid()
    prior = copy.deepcopy(model.z_prior).to(device="cpu", dtype=torch.float64)
    return EntropyTables(grid, {f: _y_tables(f, grid) for f in families}, _z_tables(prior))


# ---- loading and checking shipped tables -----------------------------------------
def _get(tensors: dict, key: str, dtype: torch.dtype, ndim: int) -> np.ndarray:
    t = tensors.get(key)
    if t is None:
        raise ModelLoadError(f"model file lacks the entropy table {key!r}; re-export the model")
    if t.dtype != dtype or t.dim() != ndim:
        raise ModelLoadError(f"entropy table {key!r} is {t.dtype} with {t.dim()} dims, "
                             f"expected {dtype} with {ndim}; re-export the model")
    return t.detach().cpu().numpy()


def _check_grid(grid: np.ndarray) -> None:
    if not (1 <= len(grid) <= 256 and np.all(grid > 0) and np.all(np.diff(grid) > 0)):
        raise ModelLoadError("tables.scale_grid must hold 1 to 256 increasing positive scales; "
                             "re-export the model")


def _check_keys(tensors: dict, families: list[str]) -> None:
    expected = {"tables.scale_grid"} | {f"tables.{n}.{a}" for n in ["z"] + [f"y.{f}" for f in families]
                                        for a in ("pmfs", "radius")}
    unknown = sorted(k for k in tensors if k.startswith("tables.") and k not in expected)
    bad = [f for f in families if f not in FAMILIES]
    if unknown or bad:
        raise ModelLoadError(f"unknown entropy tables {unknown or bad}; the model file was "
                             "written by another fastlic version")


def _load_set(tensors: dict, prefix: str, rows: int | None) -> TableSet:
    """Read and check one TableSet; ``rows`` is its required T (None: any)."""
    pmfs = _get(tensors, f"{prefix}.pmfs", torch.int32, 2)
    radius = _get(tensors, f"{prefix}.radius", torch.int32, 1)
    problem = table_problem(pmfs, radius)
    if problem is None and rows is not None and len(radius) != rows:
        problem = f"has {len(radius)} tables for {rows} scales"
    if problem:
        raise ModelLoadError(f"entropy tables {prefix} {problem}; re-export the model")
    return TableSet(pmfs, radius)


def table_problem(pmfs: np.ndarray, radius: np.ndarray) -> str | None:
    """What is wrong with int32 pmfs (T, L) and radius (T,) as a TableSet, or None."""
    if pmfs.ndim != 2 or radius.ndim != 1:
        return f"has pmfs of {pmfs.ndim} dims and radii of {radius.ndim}, expected 2 and 1"
    if len(pmfs) == 0 or len(pmfs) != len(radius):
        return f"has {len(pmfs)} pmfs for {len(radius)} radii"
    if radius.min() < 0 or 2 * int(radius.max()) + 2 > pmfs.shape[1]:
        return "has a radius outside its table"
    valid = np.arange(pmfs.shape[1]) < (2 * radius[:, None].astype(np.int64) + 2)
    if np.any(pmfs[valid] < 1) or np.any(pmfs[~valid] != 0):
        return "has an entry < 1 or padding that is not 0"
    sums = pmfs.sum(axis=1, dtype=np.int64)
    if np.any(sums != sums[0]) or sums[0] > 1 << 24:
        return "has rows with different sums or a sum above 2**24"
    return None


__all__ = ["TableSet", "EntropyTables", "build_tables", "quantize_pmf", "scale_grid",
           "table_problem", "PMF_TOTAL"]
