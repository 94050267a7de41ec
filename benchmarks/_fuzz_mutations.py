"""The mutations of benchmarks/fuzz.py: what a case changes in a seed file.

Header and substream edits change a ``Draft`` (a header and three substreams) before
sealing; "reencode" names substreams whose symbols the sealing run chooses
(``choose_symbols``); the "raw-*" ones edit the packed file after sealing
(``raw_edit``), most of them re-sealing the file CRC. Each returns a note that says
exactly what it did.
"""
from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from fastlic.errors import FastlicError
from fastlic.runtime import bitstream as fb

EXTREMES = np.array([2**31 - 1, -2**31, 2**24, -2**24, 65536, -65536, 32767, -32768,
                     1000, -1000, 1, -1], np.int64).astype(np.int32)
STRATEGIES = ("extreme", "escape", "random", "constant", "decoded")   # choose_symbols
WORDS = (0, 1, 0xFFFFFFFF, 0x80000000, 0x00010000, 0x7FFFFFFF)   # ANS word values


@dataclasses.dataclass
class Draft:
    """A case being built: header, substreams, and what sealing and the raw edits do."""

    header: fb.Header
    subs: list[bytes]
    reencode: dict[int, str] = dataclasses.field(default_factory=dict)  # substream -> strategy
    raw: list[str] = dataclasses.field(default_factory=list)            # raw edits, in order


def _pick(d: Draft, rng) -> tuple[int, bytearray]:
    i = int(rng.integers(3))
    return i, bytearray(d.subs[i])


def _flip(d, rng, target):
    i, buf = _pick(d, rng)
    if not buf:
        return _extend(d, rng, target)
    spots = [(int(rng.integers(len(buf))), int(rng.integers(8))) for _ in range(rng.integers(1, 9))]
    for pos, bit in spots:
        buf[pos] ^= 1 << bit
    d.subs[i] = bytes(buf)
    return f"flip {fb.SUBSTREAM_NAMES[i]} (byte, bit) {spots}"


def _set_bytes(d, rng, target):
    i, buf = _pick(d, rng)
    if not buf:
        return _extend(d, rng, target)
    value = int(rng.choice([0x00, 0xFF, rng.integers(256)]))
    at = sorted({int(p) for p in rng.integers(len(buf), size=rng.integers(1, 5))})
    for pos in at:
        buf[pos] = value
    d.subs[i] = bytes(buf)
    return f"set {fb.SUBSTREAM_NAMES[i]} bytes {at} to {value:#04x}"


def _set_word(d, rng, target):
    i, buf = _pick(d, rng)
    if len(buf) < 4:
        return _extend(d, rng, target)
    pos = 4 * int(rng.integers(len(buf) // 4))
    word = int(rng.choice([*WORDS, rng.integers(2**32)]))
    buf[pos:pos + 4] = struct.pack("<I", word)
    d.subs[i] = bytes(buf)
    return f"set {fb.SUBSTREAM_NAMES[i]} word at {pos} to {word:#010x}"


def _insert(d, rng, target):
    i, buf = _pick(d, rng)
    pos = int(rng.integers(len(buf) + 1))
    size = int(rng.choice([1, 2, 3, 4, 8, rng.integers(1, 17)]))
    buf[pos:pos] = rng.bytes(size)
    d.subs[i] = bytes(buf)
    return f"insert {size} bytes into {fb.SUBSTREAM_NAMES[i]} at {pos}"


def _delete(d, rng, target):
    i, buf = _pick(d, rng)
    pos = int(rng.integers(len(buf) + 1))
    size = int(rng.choice([1, 4, rng.integers(1, 17)]))
    del buf[pos:pos + size]
    d.subs[i] = bytes(buf)
    return f"delete {size} bytes of {fb.SUBSTREAM_NAMES[i]} at {pos}"


def _truncate(d, rng, target):
    i, buf = _pick(d, rng)
    size = int(rng.integers(len(buf) + 1))
    size -= size % 4 if rng.random() < 0.5 else 0
    d.subs[i] = bytes(buf[:size])
    return f"truncate {fb.SUBSTREAM_NAMES[i]} to {size} of {len(buf)} bytes"


def _extend(d, rng, target):
    i, buf = _pick(d, rng)
    size = int(rng.choice([1, 4, 8, rng.integers(1, 65)]))
    tail = bytes(size) if rng.random() < 0.3 else rng.bytes(size)
    d.subs[i] = bytes(buf + tail)
    return f"append {size} {'zero' if not any(tail) else 'random'} bytes to {fb.SUBSTREAM_NAMES[i]}"


def _swap(d, rng, target):
    i, j = (int(k) for k in rng.choice(3, size=2, replace=False))
    d.subs[i], d.subs[j] = d.subs[j], d.subs[i]
    return f"swap {fb.SUBSTREAM_NAMES[i]} and {fb.SUBSTREAM_NAMES[j]}"


def _copy(d, rng, target):
    i, j = (int(k) for k in rng.choice(3, size=2, replace=False))
    d.subs[j] = d.subs[i]
    return f"copy {fb.SUBSTREAM_NAMES[i]} over {fb.SUBSTREAM_NAMES[j]}"


def _replace_stream(d, rng, target):
    i = int(rng.integers(3))
    size = int(rng.integers(257))
    size -= size % 4 if rng.random() < 0.7 else 0
    d.subs[i] = rng.bytes(size)
    return f"replace {fb.SUBSTREAM_NAMES[i]} with {size} random bytes"


def _splice(d, rng, target):
    i, k = int(rng.integers(3)), int(rng.integers(len(target.seeds)))
    label, data = target.seeds[k]
    d.subs[i] = fb.unpack(data).substreams[i]
    return f"{fb.SUBSTREAM_NAMES[i]} from seed {k} ({label})"


def _reencode(d, rng, target, streams=None):
    """Symbols chosen for some substreams; the later ones are re-encoded too (with the
    symbols they decode to, or zeros), since their table indices follow from them."""
    streams = streams or sorted({int(i) for i in rng.integers(3, size=rng.integers(1, 4))})
    for i in range(min(streams), 3):
        d.reencode[i] = str(rng.choice(STRATEGIES)) if i in streams else "decoded"
    return "reencode " + ", ".join(f"{fb.SUBSTREAM_NAMES[i]} ({d.reencode[i]})"
                                   for i in range(min(streams), 3))


def _edit(d: Draft, what: str, **fields) -> str:
    """Replace header fields; a value Header refuses leaves the header as it was."""
    try:
        d.header = dataclasses.replace(d.header, **fields)
    except FastlicError:
        return f"{what} {fields} (refused by Header, no change)"
    return f"{what} {fields}"


def _size(d, rng, target):
    h, w = d.header.height, d.header.width
    kind = int(rng.integers(5))
    if kind == 0:
        h, w = rng.integers(1, 300, size=2)
    elif kind == 1:
        h, w = max(1, h + int(rng.integers(-16, 17))), max(1, w + int(rng.integers(-16, 17)))
    elif kind == 2:
        h, w = w, h
    elif kind == 3:
        h, w = rng.choice([1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1023, 1024, 1025], size=2)
    else:
        h, w = (2 ** rng.uniform(0, 15, size=2)).astype(int)
        w = min(int(w), fb.MAX_PIXELS // int(h))
    note = _edit(d, "size", height=int(h), width=int(w))
    return note + ("; " + _reencode(d, rng, target, [0, 1, 2]) if rng.random() < 0.5 else "")


def _mask(d, rng, target):
    mask = np.array(d.header.channel_mask)
    kind = int(rng.integers(4))
    if kind == 0:
        mask[rng.integers(len(mask), size=rng.integers(1, 4))] ^= True
    else:
        mask = [np.ones_like(mask), np.zeros_like(mask), rng.random(len(mask)) < 0.5][kind - 1]
    note = _edit(d, "channel mask", channel_mask=tuple(bool(b) for b in mask))
    return note + ("; " + _reencode(d, rng, target, [1, 2]) if rng.random() < 0.5 else "")


def _mask_length(d, rng, target):
    m = len(d.header.channel_mask)
    count = int(rng.choice([1, max(1, m - 1), m + 1, 2 * m, fb.MAX_CHANNELS]))
    return _edit(d, "channel count", channel_mask=(True,) * count)


def _color(d, rng, target):
    gray = d.header.color == fb.ColorLayout.GRAY
    return _edit(d, "colour", color=fb.ColorLayout.RGB if gray else fb.ColorLayout.GRAY)


def _quality(d, rng, target):
    return _edit(d, "quality", quality=int(rng.integers(256)))


def _recon_crc(d, rng, target):
    value = None if d.header.recon_crc is not None and rng.random() < 0.5 else int(
        rng.integers(2**32))
    return _edit(d, "reconstruction CRC", recon_crc=value)


def _model_name(d, rng, target):
    name = "".join(chr(c) for c in rng.integers(0x21, 0x7F, size=rng.integers(1, 65)))
    return _edit(d, "model name", model_name=name)


def _weights_hash(d, rng, target):
    return _edit(d, "weights hash", weights_hash=rng.bytes(fb.HASH_LEN))


def _raw(kind):
    def register(d, rng, target):
        d.raw.append(kind)
        return None    # the note is written when the edit is made, after sealing
    return register


MUTATIONS = {   # name: (weight, function(draft, rng, target) -> note)
    "flip": (10, _flip), "set-bytes": (6, _set_bytes), "set-word": (6, _set_word),
    "insert": (5, _insert), "delete": (5, _delete), "truncate": (4, _truncate),
    "extend": (4, _extend), "swap": (2, _swap), "copy": (1, _copy), "replace": (2, _replace_stream),
    "splice": (3, _splice), "reencode": (16, _reencode), "size": (6, _size),
    "mask": (6, _mask), "mask-length": (1, _mask_length), "color": (2, _color),
    "quality": (1, _quality), "recon-crc": (2, _recon_crc), "model-name": (1, _model_name),
    "weights-hash": (1, _weights_hash), "raw-field": (5, _raw("field")),
    "raw-byte": (3, _raw("byte")), "raw-cut": (2, _raw("cut")), "raw-append": (1, _raw("append")),
}
NAMES = list(MUTATIONS)
WEIGHTS = np.array([w for w, _ in MUTATIONS.values()], float)
WEIGHTS /= WEIGHTS.sum()


# ---------------------------------------------------------------- symbols and raw edits

def choose_symbols(strategy: str, base: np.ndarray, table_index: np.ndarray, coder,
                   rng) -> np.ndarray:
    """Symbols for a re-encoded substream: int32 (N,), from the decoded ``base`` (N,)."""
    out, n = base.astype(np.int32, copy=True), len(base)
    if n == 0 or strategy == "decoded":
        return out
    if strategy == "extreme":        # a few symbols set to extreme values
        at = rng.integers(n, size=rng.integers(1, min(n, 8) + 1))
        out[at] = rng.choice(EXTREMES, size=len(at))
    elif strategy == "escape":       # at and just past each symbol's table radius
        sel = rng.random(n) < rng.random()
        radius = coder.radius[np.asarray(table_index)[sel]]
        sign = rng.choice([-1, 1], len(radius))
        out[sel] = (radius + rng.integers(-1, 3, size=len(radius))) * sign
    elif strategy == "random":       # noise of a random scale, up to the int32 range
        scale = min(int(2 ** rng.uniform(0, 31)), 2**31 - 1)
        out = rng.integers(-scale, scale, size=n, endpoint=True).astype(np.int32)
    else:                            # "constant"
        out[:] = rng.choice(EXTREMES)
    return out


def _fields(h: fb.Header) -> dict[str, tuple[int, str]]:
    """Offset and struct format of each header field (docs/bitstream.md's table)."""
    n, k, c = len(h.model_name), (h.num_channels + 7) // 8, 4 if h.recon_crc is not None else 0
    return {"version": (4, "<B"), "flags": (5, "<B"), "name length": (6, "<B"),
            "quality": (15 + n, "<B"), "height": (16 + n, "<I"), "width": (20 + n, "<I"),
            "colour": (24 + n, "<B"), "channel count": (25 + n, "<H"),
            "substream count": (35 + n + k + c, "<B"), "length z": (36 + n + k + c, "<I"),
            "length y_anchor": (40 + n + k + c, "<I"), "length y_nonanchor": (44 + n + k + c, "<I")}


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def raw_edit(kind: str, data: bytes, header: fb.Header, rng) -> tuple[bytes, str]:
    """One edit of the packed file (field offsets from ``header``, the sealed one); most
    re-seal the file CRC. An edit that does not fit a file already cut is no change."""
    reseal = rng.random() < 0.9
    body = bytearray(data[:-4])
    if kind == "cut" and data:
        size = int(rng.integers(len(data)))
        return (_with_crc(data[:size]) if reseal and size >= 4 else data[:size],
                f"raw cut to {size} bytes{', re-sealed' if reseal else ''}")
    if kind == "append":
        tail = rng.bytes(int(rng.integers(1, 9)))
        return data + tail, f"raw append {len(tail)} bytes"
    if kind == "field":
        fields = list(_fields(header).items())
        name, (offset, fmt) = fields[rng.integers(len(fields))]
        if offset + struct.calcsize(fmt) > len(body):
            return data, f"raw {name}: the file is cut before it, no change"
        top = 2 ** (8 * struct.calcsize(fmt)) - 1
        old = struct.unpack_from(fmt, body, offset)[0]
        value = int(rng.choice([0, 1, 2, 3, 4, top, top - 1, (old + 1) % (top + 1),
                                max(old - 1, 0), rng.integers(top + 1)]))
        struct.pack_into(fmt, body, offset, value)
        note = f"raw {name} {old} -> {value}"
    elif kind == "byte" and body:
        pos, value = int(rng.integers(len(body))), int(rng.integers(256))
        body[pos] = value
        note = f"raw byte {pos} -> {value:#04x}"
    else:
        return data, f"raw {kind}: the file is empty, no change"
    out = _with_crc(bytes(body)) if reseal else bytes(body) + data[-4:]
    return out, note + (", re-sealed" if reseal else ", CRC not re-sealed")
