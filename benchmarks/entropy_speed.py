"""Entropy-coding speed: grouped Categorical (SymbolCoder) against constriction's
QuantizedGaussian with per-symbol parameters.

    OMP_NUM_THREADS=1 python benchmarks/entropy_speed.py [--n 1000000] [--scales s.npy]

Symbols are round(residual) with residual ~ family(0, scale): the anchor family for
half, the non-anchor family for the other half (the ``small`` config's families).
Scales are a synthetic mix like a trained hyperprior's (40 % log-uniform in
[SCALE_MIN, 0.2] for nearly-off channels, 60 % log-normal around 1), or a saved
float32 array (``--scales``). Every row reports the median over the repeats after
one warm-up, as wall time and as this thread's CPU time (the machine may be shared).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import constriction  # noqa: E402

from fastlic.entropy import SymbolCoder, build_tables  # noqa: E402
from fastlic.model import SCALE_MIN, FastLIC, get_config  # noqa: E402

CM = constriction.stream.model
RADIUS = 1024  # QuantizedGaussian support [-RADIUS, RADIUS]


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Median (wall s, thread CPU s) of fn() over ``repeats`` runs after one warm-up."""
    result, runs = fn(), []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.thread_time()
        result = fn()
        runs.append((time.perf_counter() - wall, time.thread_time() - cpu))
    return *np.median(runs, axis=0), result


def make_data(n: int, scales_path: str | None, rng) -> dict[str, np.ndarray]:
    """float32 scales (n,), int32 symbols (n,), and bool anchor mask (n,)."""
    if scales_path:
        scale = np.load(scales_path).astype(np.float32).ravel()[:n]
    else:
        log_s = np.where(rng.random(n) < 0.4, rng.uniform(np.log(SCALE_MIN), np.log(0.2), n),
                         rng.normal(0.0, 1.0, n))
        scale = np.maximum(np.exp(log_s), SCALE_MIN).astype(np.float32)
    anchor = np.arange(len(scale)) % 2 == 0
    return {"scale": scale, "anchor": anchor}


def draw_symbols(family: str, scale: np.ndarray, rng) -> np.ndarray:
    sampler = {"gaussian": rng.normal, "laplace": rng.laplace, "logistic": rng.logistic}[family]
    return np.rint(sampler(0.0, scale)).astype(np.int32)


def bench_symbol_coder(tables, data, families, repeats) -> list[tuple]:
    """Rows for scale_index and SymbolCoder encode/decode, summed over both families."""
    rows, parts = [], []
    wall, cpu, index = timed(lambda: tables.scale_index(data["scale"]), repeats)
    rows.append(("scale_index (float32 -> uint8)", wall, cpu))
    for family, mask in zip(families, (data["anchor"], ~data["anchor"])):
        coder = SymbolCoder(tables.y[family])
        symbols, ti = data["symbols"][mask], index[mask]
        enc = timed(lambda: coder.encode(symbols, ti), repeats)
        dec = timed(lambda: coder.decode(enc[2], ti), repeats)
        if not np.array_equal(dec[2], symbols):
            raise RuntimeError(f"SymbolCoder round trip failed for {family}")
        parts.append((enc[:2], dec[:2], len(enc[2])))
    rows.append(("SymbolCoder.encode (ANS, grouped Categorical)",
                 *np.sum([p[0] for p in parts], axis=0)))
    rows.append(("SymbolCoder.decode (ANS, grouped Categorical)",
                 *np.sum([p[1] for p in parts], axis=0)))
    data["coded_bytes"] = sum(p[2] for p in parts)
    return rows


def bench_core_coders(tables, data, families, repeats) -> list[tuple]:
    """The constriction calls alone on pre-grouped entries: ANS against the range coder."""
    index = tables.scale_index(data["scale"])
    groups = []
    for family, mask in zip(families, (data["anchor"], ~data["anchor"])):
        coder = SymbolCoder(tables.y[family])
        symbols, ti = coder._check(data["symbols"][mask], index[mask], encoding=True)
        order, counts = coder._groups(ti)
        entry = coder._entries(symbols[order], counts)[0]
        bounds = np.concatenate([[0], np.cumsum(counts)])
        groups += [(coder._models[t], entry[bounds[t]:bounds[t + 1]]) for t in np.flatnonzero(counts)]
    rows = []
    for name, enc_fn, dec_fn in (("ANS", _ans_encode, _ans_decode), ("range", _range_encode, _range_decode)):
        enc = timed(lambda: enc_fn(groups), repeats)
        dec = timed(lambda: dec_fn(enc[2], groups), repeats)
        rows.append((f"  constriction calls only, {name}: encode", *enc[:2]))
        rows.append((f"  constriction calls only, {name}: decode", *dec[:2]))
    return rows


def _ans_encode(groups):
    coder = constriction.stream.stack.AnsCoder()
    for model, entry in groups[::-1]:
        coder.encode_reverse(entry, model)
    return coder.get_compressed()


def _ans_decode(words, groups):
    coder = constriction.stream.stack.AnsCoder(words)
    return [coder.decode(model, len(entry)) for model, entry in groups]


def _range_encode(groups):
    coder = constriction.stream.queue.RangeEncoder()
    for model, entry in groups:
        coder.encode(entry, model)
    return coder.get_compressed()


def _range_decode(words, groups):
    coder = constriction.stream.queue.RangeDecoder(words)
    return [coder.decode(model, len(entry)) for model, entry in groups]


def bench_quantized_gaussian(data, repeats, loop_n: int) -> list[tuple]:
    """Per-symbol-parameter QuantizedGaussian, vectorised and in a Python loop (subsample)."""
    symbols = np.clip(data["symbols"], -RADIUS, RADIUS)
    std = data["scale"].astype(np.float64)
    mean = np.zeros_like(std)
    family = CM.QuantizedGaussian(-RADIUS, RADIUS)
    rows = []
    for name, coder_cls, dec_cls, enc_method in (
            ("ANS", constriction.stream.stack.AnsCoder, constriction.stream.stack.AnsCoder, "encode_reverse"),
            ("range", constriction.stream.queue.RangeEncoder, constriction.stream.queue.RangeDecoder, "encode")):
        def encode():
            coder = coder_cls()
            getattr(coder, enc_method)(symbols, family, mean, std)
            return coder.get_compressed()
        enc = timed(encode, repeats)
        dec = timed(lambda: dec_cls(enc[2]).decode(family, mean, std), repeats)
        if not np.array_equal(dec[2], symbols):
            raise RuntimeError(f"QuantizedGaussian {name} round trip failed")
        rows.append((f"QuantizedGaussian vectorised, {name}: encode", *enc[:2]))
        rows.append((f"QuantizedGaussian vectorised, {name}: decode", *dec[:2]))
    rows.append(_per_symbol_loop(symbols[:loop_n], std[:loop_n], len(symbols)))
    return rows


def _per_symbol_loop(symbols, std, n_total):
    """Decode one symbol per call with a fresh concrete model, scaled to n_total symbols."""
    coder = constriction.stream.queue.RangeEncoder()
    coder.encode(symbols, CM.QuantizedGaussian(-RADIUS, RADIUS), np.zeros_like(std), std)
    words = coder.get_compressed()

    def decode():
        dec = constriction.stream.queue.RangeDecoder(words)
        return [dec.decode(CM.QuantizedGaussian(-RADIUS, RADIUS, 0.0, float(s))) for s in std]
    wall, cpu, _ = timed(decode, 2)
    scale = n_total / len(symbols)
    return (f"QuantizedGaussian per-symbol Python loop, range: decode ({len(symbols)} sampled)",
            wall * scale, cpu * scale)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="symbols in total")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scales", help="a .npy of float32 scales instead of the synthetic mix")
    parser.add_argument("--loop-n", type=int, default=20_000, help="symbols for the per-symbol loop")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    cfg = get_config("small")
    families = (cfg.anchor_family, cfg.nonanchor_family)
    tables = build_tables(FastLIC(get_config("tiny", anchor_family=families[0],
                                             nonanchor_family=families[1])))
    data = make_data(args.n, args.scales, rng)
    data["symbols"] = np.where(data["anchor"], draw_symbols(families[0], data["scale"], rng),
                               draw_symbols(families[1], data["scale"], rng))
    n = len(data["symbols"])
    rows = bench_symbol_coder(tables, data, families, args.repeats)
    rows += bench_core_coders(tables, data, families, args.repeats)
    rows += bench_quantized_gaussian(data, args.repeats, args.loop_n)
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"numpy {np.__version__}, constriction {importlib.metadata.version('constriction')}")
    print(f"{n} symbols ({families[0]} anchors, {families[1]} non-anchors), "
          f"{8 * data['coded_bytes'] / n:.3f} bits/symbol coded, median of {args.repeats}")
    print(f"{'stage':<72} {'wall ns/sym':>11} {'cpu ns/sym':>11}")
    for name, wall, cpu in rows:
        print(f"{name:<72} {wall / n * 1e9:>11.1f} {cpu / n * 1e9:>11.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
