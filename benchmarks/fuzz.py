"""Fuzzing the decoder: real bitstreams mutated, every CRC recomputed, outcomes counted.

    python -m benchmarks.fuzz --cases N [--workers W] [--seed S] [--shipped] [--out results.json]
    python -m benchmarks.fuzz --seed S --replay CASE [--dump case.flic]

A case takes one seed file (small greyscale and RGB images, 1x1 to 96x130, with and
without the reconstruction CRC, coded by a tiny random-initialised model or, with
``--shipped``, by the shipped q1 model), applies one to three mutations
(``MUTATIONS``) and seals the file, so that no checksum stops the mutation before
the entropy decoder and the networks::

    seed ─unpack─▶ header edits ─▶ substream edits ─▶ seal ─▶ [raw edits] ─▶ decompress
                                                       │                      (outcome)
     Codec.decompress itself, with check_table_indices recording each pass's CRC
     instead of checking it, and its three SymbolCoders stood in for: they decode the
     mutated substream, or ("reencode") choose symbols (extreme values, escapes,
     noise) and encode them, so the next pass's table indices follow from them; the
     run stops after the last pass's symbols, then pack() writes the file CRC.

Outcomes: ``image`` (an array of the header's shape, uint8), the name of a
``FastlicError`` subclass, and the bugs: ``untyped:<type>``, ``wrong-shape``,
``crash`` (the worker process died), ``hang`` (over ``--timeout``) and ``memory``
(``MemoryError``, or ``OutOfMemoryError``, under an address-space limit of
``--memory`` on each worker). Each case is seeded by (``--seed``, case number);
a bug's line names its mutations and the ``--replay`` command that rebuilds it.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

import fastlic
from fastlic.errors import FastlicError, OutOfMemoryError
from fastlic.evaluation.report import markdown_table
from fastlic.runtime import bitstream as fb, codec as codec_module

from benchmarks._fuzz_mutations import MUTATIONS, NAMES, WEIGHTS, Draft, choose_symbols, raw_edit
from benchmarks._fuzz_pool import run_pool

STAGES = ("header", "entropy", "index-crc", "networks", "strict", "image")
STAGE_NOTES = {"header": "parse, model, limits", "entropy": "entropy decoder",
               "index-crc": "h_s and a parameter network ran", "networks": "networks, g_s",
               "strict": "reconstruction CRC", "image": "decoded"}
BUGS = ("wrong-shape", "crash", "hang", "memory")
CODERS = ("z_coder", "anchor_coder", "nonanchor_coder")    # Codec's, in substream order
_PACKAGE = str(Path(fastlic.__file__).parent)


def is_bug(outcome: str) -> bool:
    return outcome in BUGS or outcome.startswith(("untyped:", "harness:"))


@dataclasses.dataclass(frozen=True)
class Options:
    """What every worker needs; ``inject`` (case -> "crash", "hang" or "memory") is
    for the harness's own test."""

    seed: int = 0
    shipped: bool = False
    timeout: float = 60.0               # seconds per case (building and decoding)
    memory: int = 4 << 30               # RLIMIT_AS of a worker, bytes (0: none)
    max_pixels: int = 1 << 22           # the Codec's limit: larger headers are refused
    tiles: tuple[int, ...] = (1024, 64)  # Codec tile sizes, taken in turn by the cases
    inject: tuple[tuple[int, str], ...] = ()


# ---------------------------------------------------------------- model and seed files

def tiny_codec(max_pixels: int):
    """tests/conftest.py's tiny_model (seed 0, g_a and h_a scaled) as a Codec."""
    import torch
    from fastlic.model import FastLIC, get_config
    torch.manual_seed(0)
    model = FastLIC(get_config("tiny")).eval()
    with torch.no_grad():   # a random g_a gives |y| << 0.5: scale it so symbols are non-zero
        model.g_a[-1].weight.mul_(40.0)
        model.h_a[-1].weight.mul_(4.0)
    return codec_module.Codec.from_model(model, max_pixels=max_pixels)


def seed_images() -> list[tuple[str, np.ndarray, bool]]:
    """(label, uint8 image, reconstruction CRC or not) of every seed file."""
    from skimage import data
    rgb, grey = data.astronaut(), data.camera()
    return [("1x1 rgb", rgb[200:201, 200:201], True), ("1x1 grey", grey[:1, :1], False),
            ("17x33 rgb", rgb[100:117, 150:183], False), ("17x33 grey", grey[50:67, :33], True),
            ("64x64 rgb", rgb[180:244, 180:244], True), ("64x64 rgb", rgb[:64, 300:364], False),
            ("33x70 grey", grey[200:233, 100:170], True),
            ("96x130 rgb", rgb[250:346, 200:330], True),
            ("32x32 flat grey", np.full((32, 32), 128, np.uint8), False)]


@dataclasses.dataclass
class Target:
    """One model as Codecs of each tile size (sharing engines), and its seed files
    ((label, .flic bytes)), coded by the first."""

    codecs: list
    seeds: list[tuple[str, bytes]]

    @classmethod
    def create(cls, options: Options) -> "Target":
        import torch
        torch.set_num_threads(1)
        if options.shipped:
            codec = codec_module.Codec.load(quality=1, max_pixels=options.max_pixels)
        else:
            codec = tiny_codec(options.max_pixels)
        codecs = [codec_module.Codec(codec.info, codec.engines, codec.tables, codec.backend,
                                     codec.device, tile=tile, max_pixels=options.max_pixels)
                  for tile in options.tiles]
        seeds = [(f"{label}{'' if crc else ', no CRC'}", codecs[0].compress(image, checksum=crc))
                 for label, image, crc in seed_images()]
        return cls(codecs, seeds)

    @property
    def codec(self):
        return self.codecs[0]

    def codec_for(self, case: int):
        """The Codec that builds and decodes case ``case``: tile sizes taken in turn."""
        return self.codecs[case % len(self.codecs)]


# ---------------------------------------------------------------- sealing

class _Sealed(Exception):
    """The sealing run has every pass's symbols: stop before g_s."""


class _StandIn:
    """Takes one SymbolCoder's place in the sealing run. ``strategy`` None: decode the
    (mutated) substream as the decoder would and keep it; else choose symbols (from the
    decoded ones where the stream decodes) and keep their encoding instead."""

    def __init__(self, coder, stream: bytes, strategy: str | None, rng, last: bool):
        self.coder, self.stream, self.strategy, self.rng, self.last = (
            coder, stream, strategy, rng, last)

    def decode(self, data: bytes, table_index: np.ndarray) -> np.ndarray:
        if self.strategy is None:
            symbols = self.coder.decode(data, table_index)
        else:
            try:
                base = self.coder.decode(data, table_index)
            except FastlicError:
                base = np.zeros(len(table_index), np.int32)
            symbols = choose_symbols(self.strategy, base, table_index, self.coder, self.rng)
            self.stream = self.coder.encode(symbols, table_index)
        if self.last:
            raise _Sealed
        return symbols


def seal(codec, d: Draft, rng) -> bytes:
    """Pack the draft with the index CRCs and substreams that the decoder's own run
    gives (module docstring); where that run stops on an error, the CRCs and streams
    not reached stay as they were (the case's decode stops there too)."""
    data = fb.pack(fb.Bitstream(d.header, tuple(d.subs)))
    crcs: dict[str, int] = {}

    def record(header, which, indices):
        crcs[which] = fb.table_index_crc(indices)

    saved = [getattr(codec, name) for name in CODERS]
    stand_ins = [_StandIn(coder, d.subs[i], d.reencode.get(i), rng, last=i == 2)
                 for i, coder in enumerate(saved)]
    try:
        for name, stand_in in zip(CODERS, stand_ins):
            setattr(codec, name, stand_in)
        with mock.patch.object(codec_module, "check_table_indices", record):
            codec.decompress(data)
    except Exception:   # _Sealed, or where the case's own decode will stop
        pass
    finally:
        for name, coder in zip(CODERS, saved):
            setattr(codec, name, coder)
    index_crc = tuple(crcs.get(p, old) for p, old in zip(fb.INDEX_PASSES, d.header.index_crc))
    header = dataclasses.replace(d.header, index_crc=index_crc)
    return fb.pack(fb.Bitstream(header, tuple(s.stream for s in stand_ins)))


# ---------------------------------------------------------------- one case

def build_case(target: Target, seed: int, case: int) -> tuple[bytes, bool, list[str], list[str]]:
    """(file, strict, mutation names, notes) of case ``case``: the same for the same
    (seed, case) and model."""
    rng = np.random.default_rng([seed, case])
    k = int(rng.integers(len(target.seeds)))
    label, data = target.seeds[k]
    bs = fb.unpack(data)
    d = Draft(bs.header, list(bs.substreams))
    names = [str(n) for n in rng.choice(NAMES, size=rng.choice([1, 2, 3], p=[.6, .3, .1]),
                                        p=WEIGHTS)]
    notes = [f"seed file {k} ({label})"]
    notes += [note for n in names if (note := MUTATIONS[n][1](d, rng, target))]
    data = seal(target.codec_for(case), d, rng)
    for kind in d.raw:
        data, note = raw_edit(kind, data, d.header, rng)
        notes.append(note)
    return data, bool(rng.random() < 0.1), names, notes


def _stage(exc: BaseException) -> str:
    """Where the decode stopped, from the traceback's frames inside fastlic."""
    frames, tb = [], exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename.startswith(_PACKAGE):
            frames.append((code.co_filename, code.co_name))
        tb = tb.tb_next
    if not frames:
        return "harness"
    if any(name == "read_header" for _, name in frames):
        return "header"
    path, name = frames[-1]
    if f"{os.sep}entropy{os.sep}" in path:
        return "entropy"
    return {"check_table_indices": "index-crc", "check_reconstruction": "strict"}.get(
        name, "networks")


def _line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def classify(codec, data: bytes, strict: bool) -> tuple[str, str, str]:
    """Decode ``data`` -> (outcome, stage, message)."""
    try:
        image = codec.decompress(data, strict=strict)
    except OutOfMemoryError as exc:          # typed, but over the memory bound
        return "memory", _stage(exc), _line(exc)
    except FastlicError as exc:
        return type(exc).__name__, _stage(exc), _line(exc)
    except MemoryError as exc:
        return "memory", _stage(exc), _line(exc)
    except Exception as exc:
        return f"untyped:{type(exc).__name__}", _stage(exc), _line(exc)
    h = fb.peek_header(data)
    shape = (h.height, h.width) if h.color == fb.ColorLayout.GRAY else (h.height, h.width, 3)
    if not isinstance(image, np.ndarray) or image.shape != shape or image.dtype != np.uint8:
        got = (getattr(image, "shape", None), getattr(image, "dtype", type(image).__name__))
        return "wrong-shape", "image", f"got {got}, the header says {shape} uint8"
    return "image", "image", ""


def run_case(target: Target, options: Options, case: int) -> dict:
    start = time.perf_counter()
    names, notes = [], []
    try:
        _inject(options, case)
        data, strict, names, notes = build_case(target, options.seed, case)
        outcome, stage, message = classify(target.codec_for(case), data, strict)
    except MemoryError as exc:   # while sealing the case: the decoder's own run
        outcome, stage, message = "memory", _stage(exc), _line(exc)
    except Exception as exc:
        outcome, stage, message = f"harness:{type(exc).__name__}", "harness", _line(exc)
    return {"case": case, "outcome": outcome, "stage": stage, "mutations": names,
            "notes": notes, "message": message, "seconds": time.perf_counter() - start,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _inject(options: Options, case: int) -> None:
    fault = dict(options.inject).get(case)
    if fault == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "hang":
        time.sleep(10 * options.timeout)
    elif fault == "memory":
        np.ones(max(options.memory, 1 << 40), np.uint8)


# ---------------------------------------------------------------- runs

@dataclasses.dataclass
class Report:
    """Counts of one run; ``bugs`` holds the first ``MAX_BUGS`` bug cases in full."""

    seed: int
    workers: int
    cases: int = 0
    elapsed: float = 0.0       # seconds from the first case sent to the last result
    busy: float = 0.0          # seconds the workers spent on cases (restarts not counted)
    restarts: int = 0
    peak_rss: int = 0          # bytes, the largest of any worker's peak resident memory
    slowest: tuple = (0.0, -1)  # (seconds, case) of the slowest case with a result
    outcomes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    stages: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    by_mutation: dict = dataclasses.field(default_factory=dict)  # name -> Counter of stages
    bugs: list = dataclasses.field(default_factory=list)
    bug_count: int = 0

    MAX_BUGS = 100

    def add(self, result: dict) -> None:
        self.cases += 1
        self.busy += result["seconds"]
        self.peak_rss = max(self.peak_rss, result.get("peak_rss", 0))
        if result["outcome"] != "hang":
            self.slowest = max(self.slowest, (result["seconds"], result["case"]))
        self.outcomes[result["outcome"]] += 1
        self.stages[result["stage"]] += 1
        for name in set(result["mutations"]):
            self.by_mutation.setdefault(name, collections.Counter())[result["stage"]] += 1
        if is_bug(result["outcome"]):
            self.bug_count += 1
            if len(self.bugs) < self.MAX_BUGS:
                self.bugs.append(result)

    def share(self, stages) -> float:
        """The share of cases whose decode stopped at one of ``stages``."""
        return sum(self.stages[s] for s in stages) / max(self.cases, 1)

    def to_json(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "outcomes": dict(self.outcomes), "stages": dict(self.stages),
                "by_mutation": {k: dict(v) for k, v in self.by_mutation.items()}}


def run_cases(cases: int, options: Options = Options(), workers: int = 1,
              time_limit: float | None = None, log=None) -> Report:
    """Cases 0..cases-1 in ``workers`` spawned processes (benchmarks/_fuzz_pool.py),
    no new case sent ``time_limit`` seconds after the first; the counts."""
    report = Report(options.seed, workers)
    run = run_pool(cases, Target.create, run_case, options, report.add, workers=workers,
                   timeout=options.timeout, memory=options.memory, time_limit=time_limit,
                   log=log)
    report.elapsed, report.restarts = run.elapsed, run.restarts
    return report


# ---------------------------------------------------------------- report and command

def format_report(report: Report, options: Options) -> str:
    """The run's line, its limits, and tables by outcome, stage and mutation."""
    rate = report.cases / report.elapsed if report.elapsed else 0.0
    per_worker = report.cases / report.busy if report.busy else 0.0
    total = max(report.cases, 1)
    model = "shipped q1" if options.shipped else "tiny (random init)"
    lines = [f"# fuzz: {report.cases} cases, seed {options.seed}, model {model}, "
             f"{report.workers} worker(s), {report.elapsed:.1f} s: {rate:.1f} cases/s, "
             f"{per_worker:.1f} cases/s per busy worker; {report.restarts} worker restart(s)",
             f"# limits: {options.timeout:g} s per case, address space "
             f"{options.memory / 2**30:g} GiB per worker (peak resident: "
             f"{report.peak_rss / 2**20:.0f} MiB), max_pixels {options.max_pixels}, tiles "
             f"{'/'.join(map(str, options.tiles))} px in turn; slowest case "
             f"{report.slowest[0]:.2f} s (case {report.slowest[1]})", ""]
    rows = [(o, n, n / total, "bug" if is_bug(o) else "")
            for o, n in report.outcomes.most_common()]
    lines += [markdown_table(rows, ["outcome", "cases", "share", ""], 4), ""]
    rows = [(s, STAGE_NOTES.get(s, ""), report.stages[s], report.stages[s] / total)
            for s in (*STAGES, *sorted(set(report.stages) - set(STAGES))) if report.stages[s]]
    lines += [markdown_table(rows, ["decode stopped at", "", "cases", "share"], 4), ""]
    rows = [(name, sum(c.values()), *(c[s] for s in STAGES))
            for name, c in sorted(report.by_mutation.items())]
    lines += [markdown_table(rows, ["mutation", "cases", *STAGES], 0), ""]
    lines.append(f"bugs: {report.bug_count}" if report.bug_count else "bugs: none")
    for bug in report.bugs[:20]:
        lines.append(f"- case {bug['case']}: {bug['outcome']} at {bug['stage']}: "
                     f"{bug['message']}; {' | '.join(bug['notes'])}; replay: python -m "
                     f"benchmarks.fuzz --seed {options.seed} --replay {bug['case']}"
                     f"{' --shipped' if options.shipped else ''}")
    return "\n".join(lines)


def replay(options: Options, case: int, dump: str | None) -> int:
    """Rebuild one case in this process, print its mutations, decode it with the traceback."""
    import traceback
    target = Target.create(options)
    data, strict, _, notes = build_case(target, options.seed, case)
    print(f"# case {case}, seed {options.seed}, {len(data)} bytes, strict={strict}")
    print("\n".join(f"# {note}" for note in notes))
    if dump:
        Path(dump).write_bytes(data)
    if len(data) <= 4096:
        print(f"data = bytes.fromhex({data.hex()!r})")
    codec = target.codec_for(case)
    print(f"# tile {codec.tile} px")
    print(classify(codec, data, strict))
    try:
        codec.decompress(data, strict=strict)
    except Exception:
        traceback.print_exc()
    return 0


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shipped", action="store_true", help="the shipped q1 model, not the tiny one")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case (hang)")
    p.add_argument("--memory", type=float, default=4.0, help="GiB of address space per worker")
    p.add_argument("--max-pixels", type=int, default=1 << 22, help="the decoder's pixel limit")
    p.add_argument("--tiles", default="1024,64", help="Codec tile sizes, taken in turn")
    p.add_argument("--time-limit", type=float, help="send no new case after this many seconds")
    p.add_argument("--out", help="write the report as JSON")
    p.add_argument("--replay", type=int, metavar="CASE", help="rebuild and decode one case here")
    p.add_argument("--dump", help="with --replay: write the case's file")
    args = p.parse_args(argv)
    options = Options(seed=args.seed, shipped=args.shipped, timeout=args.timeout,
                      memory=int(args.memory * 2**30), max_pixels=args.max_pixels,
                      tiles=tuple(int(t) for t in args.tiles.split(",")))
    if args.replay is not None:
        return replay(options, args.replay, args.dump)
    report = run_cases(args.cases, options, args.workers, args.time_limit, _log)
    print(format_report(report, options))
    if args.out:
        record = {"command": " ".join(["python -m benchmarks.fuzz", *(argv or sys.argv[1:])]),
                  "options": dataclasses.asdict(options), **report.to_json()}
        Path(args.out).write_text(json.dumps(record, indent=1, default=str))
    return 1 if report.bug_count else 0


if __name__ == "__main__":
    sys.exit(main())
