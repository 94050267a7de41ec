"""Grouped entropy coding of int32 symbols with shipped integer tables (ANS, constriction).

Each symbol comes with the index of its table. Symbols are stably sorted by table and
every group is coded with one vectorised constriction call, the fast path (a cached
``Categorical`` per table)::

    symbols, table_index ─stable sort─▶ group 0 │ group 1 │ … │ group T-1 │ escapes
                                        one call each, table t's model    head, bits

Inside a table, value v in [-K, K] is entry v + K; anything else is the escape entry
2K + 1, and its value follows after all groups: a head (sign, n) uniform over 64,
then the n low bits of e + 1 = 2**n + r (e = |v| - K - 1), as uniform chunks of at
most 16 bits, grouped by n. Any int32 value round-trips.

The stream is a little-endian sequence of uint32 ANS words; ANS decodes faster than
constriction's range coder on these tables (benchmarks/entropy_speed.py).
"""
from __future__ import annotations

import constriction
import numpy as np

from ..errors import CorruptBitstreamError
from .tables import TableSet, table_problem

cmodel = constriction.stream.model  # a Rust extension: its submodules cannot be imported by name
AnsCoder = constriction.stream.stack.AnsCoder

_HEAD = cmodel.Uniform(64)        # sign * 32 + n, n = bit length of (e + 1) minus 1
_CHUNK = 16                       # payload bits per uniform call (constriction: size < 2**24)
_UNIFORM = {b: cmodel.Uniform(1 << b) for b in range(1, _CHUNK + 1)}
_INT32 = np.iinfo(np.int32)


class SymbolCoder:
    """Codes int32 symbols, each with the index of its table in one TableSet.

    Thread-safe: the cached models are immutable and every call owns its coder.
    """

    def __init__(self, tables: TableSet):
        problem = table_problem(tables.pmfs, tables.radius)
        if problem:
            raise ValueError(f"SymbolCoder needs a valid TableSet; this one {problem}")
        self.tables = tables
        self.radius = tables.radius.astype(np.int64)
        self.radius32 = tables.radius.astype(np.int32)
        total = float(tables.total)
        self._models = [cmodel.Categorical(row[:2 * k + 2] / total, perfect=False)
                        for row, k in zip(tables.pmfs.astype(np.float64), self.radius)]
        # numpy sorts 8- and 16-bit integers with a stable radix sort
        self._index_dtype = np.uint8 if len(self.radius) <= 1 << 8 else (
            np.uint16 if len(self.radius) <= 1 << 16 else np.int64)

    # ---- public API -----------------------------------------------------------------
    def encode(self, symbols: np.ndarray, table_index: np.ndarray) -> bytes:
        """symbols: 1-D integer (int32 range), table_index: same length, ints in [0, T) -> bytes."""
        symbols, table_index = self._check(symbols, table_index, encoding=True)
        order, counts = self._groups(table_index)
        entry, values, k = self._entries(symbols[order], counts)
        coder = AnsCoder()
        _encode_escapes(coder, values, k)
        bounds = np.cumsum(counts)
        for t in np.flatnonzero(counts)[::-1]:  # ANS is a stack: push the last group first
            coder.encode_reverse(entry[bounds[t] - counts[t]:bounds[t]], self._models[t])
        return coder.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, table_index: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`encode` for the same table_index -> int32 (N,), encode's order.

        Raises CorruptBitstreamError if ``data`` cannot be the encoding of N symbols
        (some corruptions go unnoticed and decode to wrong symbols).
        """
        _, table_index = self._check(None, table_index, encoding=False)
        coder = _open(data)
        order, counts = self._groups(table_index)
        try:
            values, k = self._decode_groups(coder, counts)
            escaped = np.flatnonzero(values > k)  # entry 2K + 1, i.e. value K + 1
            if len(escaped):
                values[escaped] = _decode_escapes(coder, k[escaped].astype(np.int64))
            empty = coder.is_empty()
        except CorruptBitstreamError:
            raise
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # constriction raises ValueError or a Rust panic
            raise CorruptBitstreamError(f"entropy-coded data does not decode ({exc}); "
                                        "the file is damaged") from None
        if not empty:
            raise CorruptBitstreamError("entropy-coded data has bits left after the last "
                                        "symbol; the file is damaged")
        out = np.empty(len(values), dtype=np.int32)
        out[order] = values
        return out

    def estimate_bits(self, symbols: np.ndarray, table_index: np.ndarray) -> float:
        """-log2 of the quantized table probabilities plus the escapes' payload bits."""
        symbols, table_index = self._check(symbols, table_index, encoding=True)
        order, counts = self._groups(table_index)
        entry, values, k = self._entries(symbols[order], counts)
        probs = self.tables.pmfs[table_index[order], entry] / self.tables.total
        n = _split_escapes(values, k)[1]
        return float(-np.log2(probs).sum() + 6 * len(n) + n.sum())

    # ---- steps ----------------------------------------------------------------------
    def _check(self, symbols, table_index, encoding: bool):
        """Validate arguments -> (int32 symbols or None, table indices in the sort dtype)."""
        table_index = np.asarray(table_index)
        if table_index.ndim != 1 or not (table_index.dtype.kind in "iu" or table_index.size == 0):
            raise ValueError(f"table_index must be a 1-D integer array, got {table_index.dtype} "
                             f"with shape {table_index.shape}")
        if table_index.size and (table_index.min() < 0 or table_index.max() >= len(self.radius)):
            raise ValueError(f"table_index must lie in [0, {len(self.radius)})")
        if encoding:
            symbols = np.asarray(symbols)
            if symbols.shape != table_index.shape or not (symbols.dtype.kind in "iu" or symbols.size == 0):
                raise ValueError(f"symbols must be a 1-D integer array as long as table_index, "
                                 f"got {symbols.dtype} with shape {symbols.shape}")
            if symbols.dtype != np.int32 and symbols.size and (
                    symbols.min() < _INT32.min or symbols.max() > _INT32.max):
                raise ValueError("symbols must lie in the int32 range")
            symbols = symbols.astype(np.int32, copy=False)
        return symbols, table_index.astype(self._index_dtype, copy=False)

    def _groups(self, table_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stable order grouping symbols by table (int64 (N,)) and group sizes (int64 (T,))."""
        order = np.argsort(table_index, kind="stable")
        return order, np.bincount(table_index, minlength=len(self.radius)).astype(np.int64)

    def _entries(self, sorted_symbols: np.ndarray, counts: np.ndarray):
        """Grouped int32 symbols (N,) -> int32 table entries (N,), and the escaped symbols'
        int64 values and radii (E,) each."""
        k = np.repeat(self.radius32, counts)
        entry = sorted_symbols + k  # may wrap around for escapes, which are replaced
        escaped = np.flatnonzero(entry.view(np.uint32) > (2 * k).view(np.uint32))
        k = k[escaped].astype(np.int64)
        entry[escaped] = 2 * k + 1
        return entry, sorted_symbols[escaped].astype(np.int64), k

    def _decode_groups(self, coder: AnsCoder, counts: np.ndarray):
        """Decode every group -> int32 values (N,) in grouped order, as entry - K (escapes
        read K + 1), and each symbol's radius K (int32 (N,)).

        One constriction call per group and nothing else inside the loop: z has 64 small
        groups, where per-group numpy calls are a large share of the work.
        """
        nonempty = np.flatnonzero(counts)
        models = self._models
        chunks = [coder.decode(models[t], n)
                  for t, n in zip(nonempty.tolist(), counts[nonempty].tolist())]
        k = np.repeat(self.radius32, counts)
        if not chunks:
            return np.zeros(0, dtype=np.int32), k
        values = np.concatenate(chunks)
        values -= k
        return values, k


# ---- the stream and escaped values --------------------------------------------------
def _open(data: bytes) -> AnsCoder:
    """bytes -> an ANS coder holding them; CorruptBitstreamError if they cannot be ANS words."""
    if len(data) % 4:
        raise CorruptBitstreamError(f"entropy-coded data is {len(data)} bytes, not a multiple "
                                    "of 4; the file is truncated or damaged")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    try:
        return AnsCoder(words)
    except Exception as exc:  # e.g. a last word of zero
        raise CorruptBitstreamError(f"entropy-coded data is invalid ({exc}); the file is damaged") from None


def _split_escapes(values: np.ndarray, k: np.ndarray):
    """Escaped int64 values and their radii (E,) -> head int32, n and m = e + 1 = 2**n + r int64."""
    negative = values < 0
    m = np.where(negative, -k - values, values - k)          # >= 1, at most 2**31
    n = (np.frexp(m.astype(np.float64))[1] - 1).astype(np.int64)
    return (negative * 32 + n).astype(np.int32), n, m


def _payload_chunks(n_value: int) -> list[tuple[int, int]]:
    """(shift, bits) of the uniform chunks holding the n low bits of e + 1, in decode order."""
    return [(s, min(_CHUNK, n_value - s)) for s in range(0, n_value, _CHUNK)]


def _encode_escapes(coder: AnsCoder, values: np.ndarray, k: np.ndarray) -> None:
    """Push escaped values' heads and payload chunks (decoded after all groups)."""
    if not len(values):
        return
    head, n, m = _split_escapes(values, k)
    for n_value in np.unique(n)[::-1]:
        r = m[n == n_value] - (1 << int(n_value))
        for shift, bits in _payload_chunks(int(n_value))[::-1]:
            coder.encode_reverse(((r >> shift) & ((1 << bits) - 1)).astype(np.int32), _UNIFORM[bits])
    coder.encode_reverse(head, _HEAD)


def _decode_escapes(coder: AnsCoder, k: np.ndarray) -> np.ndarray:
    """Read the payload of len(k) escaped values -> int64 values; CorruptBitstreamError if not int32."""
    head = coder.decode(_HEAD, len(k)).astype(np.int64) if len(k) else np.zeros(0, np.int64)
    negative, n = head >= 32, head % 32
    m = np.left_shift(1, n)
    for n_value in np.unique(n):
        sel = n == n_value
        for shift, bits in _payload_chunks(int(n_value)):
            m[sel] += coder.decode(_UNIFORM[bits], int(sel.sum())).astype(np.int64) << shift
    values = np.where(negative, -k - m, k + m)
    if np.any(values < _INT32.min) or np.any(values > _INT32.max):
        raise CorruptBitstreamError("an escaped symbol decodes outside int32; the file is damaged")
    return values
