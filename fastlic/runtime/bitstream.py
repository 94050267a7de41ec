"""Bitstream v2 (``.flic``): the header dataclass, ``pack`` and ``unpack``.

The byte layout, every validation rule and the error raised for each are in
docs/bitstream.md; this module is the only code that reads or writes it.

Validation scheme: ``Header`` and ``Bitstream`` check every field in
``__post_init__`` and raise ``CorruptBitstreamError`` (never ``ValueError``), so
an object that exists is always packable and ``unpack`` needs no second set of
rules. ``unpack`` reads fields in file order with bounds checks, so it never
slices or allocates past ``len(data)``.
"""
from __future__ import annotations

import dataclasses
import enum
import operator
import os
import struct
import zlib

import numpy as np

from ..errors import (BackendMismatchError, BadMagicError, CorruptBitstreamError,
                      ModelMismatchError, PixelLimitError, ReconstructionMismatchError,
                      TrailingDataError,
                      TruncatedBitstreamError, UnsupportedVersionError)

MAGIC = b"FLIC"
FORMAT_VERSION = 2
MAX_SIDE = 1 << 15
MAX_PIXELS = 1 << 28                 # what the format can describe
DEFAULT_MAX_PIXELS = 1 << 27         # what a Codec codes unless told otherwise (134 Mpx)
MAX_NAME_LEN = 64
HASH_LEN = 8
MAX_CHANNELS = 4096
SUBSTREAM_NAMES = ("z", "y_anchor", "y_nonanchor")
FLAG_RECON_CRC = 0x01                # flags bit 0: the header holds a reconstruction CRC
KNOWN_FLAGS = FLAG_RECON_CRC
_U32_MAX = 0xFFFFFFFF
_IMAGE = struct.Struct("<8sBIIBH")   # weights hash, quality, height, width, colour, M
_INDEX_CRCS = struct.Struct("<II")   # anchor index CRC, non-anchor index CRC
_U32 = struct.Struct("<I")


class ColorLayout(enum.IntEnum):
    """Colour layout of the original image; the value is its channel count."""

    GRAY = 1
    RGB = 3


def _corrupt(what: str) -> CorruptBitstreamError:
    return CorruptBitstreamError(
        f"invalid .flic header: {what}; the file is damaged, re-encode the source image")


def _integer(value: object, what: str, low: int, high: int) -> int:
    try:
        number = operator.index(value)
    except TypeError:
        raise _corrupt(f"{what} must be an integer, got {type(value).__name__}") from None
    if not low <= number <= high:
        raise _corrupt(f"{what} {number} is outside {low}..{high}")
    return number


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LEN:
        raise _corrupt(f"model name must be 1..{MAX_NAME_LEN} characters, got {name!r:.80}")
    if not all("\x21" <= c <= "\x7e" for c in name):
        raise _corrupt(f"model name {name!r:.80} has bytes outside printable ASCII 0x21..0x7E")


def _check_hash(value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)) or len(value) != HASH_LEN:
        raise _corrupt(f"weights hash must be {HASH_LEN} bytes, got {value!r:.80}")
    return bytes(value)


def _check_mask(mask: object) -> tuple[bool, ...]:
    flags = tuple(bool(flag) for flag in mask)   # accepts a tuple or a numpy bool array
    if not 1 <= len(flags) <= MAX_CHANNELS:
        raise _corrupt(f"channel mask has {len(flags)} entries, expected 1..{MAX_CHANNELS}")
    return flags


@dataclasses.dataclass(frozen=True)
class Header:
    """Everything a decoder needs besides the payloads.

    Fields are normalised on construction (numpy integers -> int, a numpy bool
    array -> tuple of bool, an int -> ColorLayout); invalid values raise
    ``CorruptBitstreamError``.
    """

    model_name: str                  # printable ASCII without spaces, 1..64 chars
    weights_hash: bytes              # first 8 bytes of the weights file's sha256
    quality: int                     # 0..255
    height: int                      # original image size, 1..MAX_SIDE each,
    width: int                       # height * width <= MAX_PIXELS
    color: ColorLayout
    channel_mask: tuple[bool, ...]   # one per latent channel; True = channel is coded
    index_crc: tuple[int, int]       # CRC32 of the anchor / non-anchor table indices
    recon_crc: int | None = None     # CRC32 of the decoded image (reconstruction_crc), opt-in

    def __post_init__(self) -> None:
        _check_name(self.model_name)
        self._set("weights_hash", _check_hash(self.weights_hash))
        self._set("quality", _integer(self.quality, "quality", 0, 255))
        self._set("height", _integer(self.height, "image height", 1, MAX_SIDE))
        self._set("width", _integer(self.width, "image width", 1, MAX_SIDE))
        if self.height * self.width > MAX_PIXELS:
            raise _corrupt(f"image size {self.height}x{self.width} exceeds {MAX_PIXELS} pixels")
        self._set("color", _color(self.color))
        self._set("channel_mask", _check_mask(self.channel_mask))
        self._set("index_crc", _check_index_crc(self.index_crc))
        if self.recon_crc is not None:
            self._set("recon_crc", _integer(self.recon_crc, "reconstruction CRC", 0, _U32_MAX))

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    @property
    def num_channels(self) -> int:
        """Latent channel count M (coded or not)."""
        return len(self.channel_mask)

    @property
    def flags(self) -> int:
        """The flags byte, derived from the optional fields (so it is always consistent)."""
        return FLAG_RECON_CRC if self.recon_crc is not None else 0


def _color(value: object) -> ColorLayout:
    try:
        return ColorLayout(value)
    except ValueError:
        raise _corrupt(f"colour layout {value!r:.20} is not 1 (gray) or 3 (RGB)") from None


def _check_index_crc(value: object) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2:
        raise _corrupt(f"index_crc must be 2 CRC32 values, got {value!r:.80}")
    return tuple(_integer(crc, "index CRC", 0, _U32_MAX) for crc in pair)


@dataclasses.dataclass(frozen=True)
class Bitstream:
    """A header and the three v1 substreams, in order: z, y_anchor, y_nonanchor."""

    header: Header
    substreams: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.header, Header):
            raise _corrupt(f"header must be a Header, got {type(self.header).__name__}")
        parts = tuple(self.substreams)
        if not all(isinstance(p, (bytes, bytearray, memoryview)) for p in parts):
            raise _corrupt("substreams must be bytes objects")
        parts = tuple(bytes(part) for part in parts)
        if len(parts) != len(SUBSTREAM_NAMES):
            raise _corrupt(f"{len(parts)} substreams, format v{FORMAT_VERSION} has "
                           f"{len(SUBSTREAM_NAMES)} ({', '.join(SUBSTREAM_NAMES)})")
        for name, part in zip(SUBSTREAM_NAMES, parts):
            if len(part) > _U32_MAX:
                raise _corrupt(f"substream {name} is {len(part)} bytes, the limit is {_U32_MAX}")
        object.__setattr__(self, "substreams", parts)


# ---------------------------------------------------------------- writing

def _pack_header(h: Header) -> bytes:
    name = h.model_name.encode("ascii")
    mask = np.packbits(np.asarray(h.channel_mask, dtype=bool)).tobytes()
    recon = b"" if h.recon_crc is None else _U32.pack(h.recon_crc)
    return b"".join((
        struct.pack("<4sBBB", MAGIC, FORMAT_VERSION, h.flags, len(name)), name,
        _IMAGE.pack(h.weights_hash, h.quality, h.height, h.width, h.color, h.num_channels),
        mask, _INDEX_CRCS.pack(*h.index_crc), recon, bytes([len(SUBSTREAM_NAMES)])))


def pack(bs: Bitstream) -> bytes:
    """Serialise ``bs``; ``unpack(pack(bs)) == bs`` for every valid Bitstream."""
    lengths = b"".join(_U32.pack(len(part)) for part in bs.substreams)
    body = b"".join((_pack_header(bs.header), lengths, *bs.substreams))
    return body + _U32.pack(zlib.crc32(body))


# ---------------------------------------------------------------- reading

class _Reader:
    """Sequential bounds-checked reads; running out raises TruncatedBitstreamError."""

    def __init__(self, data: memoryview):
        self.data = data
        self.pos = 0

    def take(self, size: int, what: str) -> memoryview:
        end = self.pos + size
        if end > len(self.data):
            raise TruncatedBitstreamError(
                f"truncated .flic file: it is {len(self.data)} bytes but the {what} needs "
                f"{end}; the copy is incomplete, copy it again or re-encode")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def unpack(self, fmt: struct.Struct, what: str) -> tuple:
        return fmt.unpack(self.take(fmt.size, what))


def _read_magic_and_version(r: _Reader) -> None:
    head = bytes(r.data[:len(MAGIC)])
    if head != MAGIC[:len(head)] or (len(head) == len(MAGIC) and head != MAGIC):
        raise BadMagicError(f"not a .flic file (starts with {head!r}, expected {MAGIC!r}); "
                            "pass a file written by `fastlic compress`")
    r.take(len(MAGIC), "magic")
    (version,) = r.take(1, "format version")
    if version == 1:
        raise UnsupportedVersionError(
            ".flic format version 1 is not supported: v1 files took their probabilities from "
            "float networks and decode only on the engine that wrote them; this fastlic reads "
            f"version {FORMAT_VERSION} (exact entropy path): re-encode the source image")
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f".flic format version {version} is not supported (this fastlic reads version "
            f"{FORMAT_VERSION}); decode it with the fastlic release that wrote it")


def _read_flags(r: _Reader) -> int:
    (flags,) = r.take(1, "flags")
    if flags & ~KNOWN_FLAGS:
        raise _corrupt(f"flags {flags:#04x} set bits other than {KNOWN_FLAGS:#04x}, which this "
                       "format version does not define")
    return flags


def _read_mask(r: _Reader, count: int) -> tuple[bool, ...]:
    _integer(count, "channel count", 1, MAX_CHANNELS)
    raw = np.frombuffer(r.take((count + 7) // 8, "channel mask"), dtype=np.uint8)
    if raw[-1] & ((1 << (8 * raw.size - count)) - 1):
        raise _corrupt(f"channel mask padding bits after channel {count} are not zero")
    return tuple(np.unpackbits(raw, count=count).astype(bool).tolist())


def _read_header(r: _Reader) -> Header:
    _read_magic_and_version(r)
    flags = _read_flags(r)
    (name_len,) = r.take(1, "model name length")
    _integer(name_len, "model name length", 1, MAX_NAME_LEN)
    name = bytes(r.take(name_len, "model name")).decode("latin-1")
    weights_hash, quality, height, width, color, count = r.unpack(_IMAGE, "image fields")
    mask = _read_mask(r, count)
    index_crc = r.unpack(_INDEX_CRCS, "index CRCs")
    recon_crc = r.unpack(_U32, "reconstruction CRC")[0] if flags & FLAG_RECON_CRC else None
    (n_sub,) = r.take(1, "substream count")
    _integer(n_sub, "substream count", len(SUBSTREAM_NAMES), len(SUBSTREAM_NAMES))
    return Header(name, weights_hash, quality, height, width, color, mask, index_crc, recon_crc)


def _read_frame(data: memoryview) -> tuple[Header, list[memoryview]]:
    """Parse and check everything; return the header and views of the payloads."""
    r = _Reader(data)
    header = _read_header(r)
    lengths = [r.unpack(_U32, f"length of substream {name}")[0] for name in SUBSTREAM_NAMES]
    payloads = [r.take(n, f"substream {name}") for name, n in zip(SUBSTREAM_NAMES, lengths)]
    (stored,) = r.unpack(_U32, "checksum")
    if r.pos != len(data):
        raise TrailingDataError(
            f".flic file has {len(data) - r.pos} unexpected bytes after its checksum; "
            f"cut it to its first {r.pos} bytes or re-encode it")
    computed = zlib.crc32(data[:-_U32.size])
    if computed != stored:
        raise CorruptBitstreamError(
            f".flic checksum mismatch (stored {stored:#010x}, computed {computed:#010x}); "
            "the file is damaged, re-encode the source image")
    return header, payloads


def _view(data: bytes) -> memoryview:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    return memoryview(data).cast("B")


def unpack(data: bytes) -> Bitstream:
    """Parse and fully validate a .flic file; raises a BitstreamError subclass."""
    header, payloads = _read_frame(_view(data))
    return Bitstream(header, tuple(bytes(p) for p in payloads))


def peek_header(data: bytes) -> Header:
    """The header of a .flic file, after the same checks as ``unpack`` (CRC included)."""
    return _read_frame(_view(data))[0]


# The longest header: magic, version, flags, name length, name, image fields, the mask
# of MAX_CHANNELS, both index CRCs, the reconstruction CRC, substream count and lengths.
MAX_PREFIX = (len(MAGIC) + 3 + MAX_NAME_LEN + _IMAGE.size + MAX_CHANNELS // 8
              + _INDEX_CRCS.size + _U32.size + 1 + _U32.size * len(SUBSTREAM_NAMES))


def read_file(path, max_pixels: int | None = None) -> bytes:
    """A .flic file's bytes, its header read and checked first: the magic, version and
    fields, that the file is as long as its substream lengths say, and (if given) that
    width x height is at most ``max_pixels`` (``PixelLimitError``), all before the
    payloads are read. A 2 GB file that is not .flic costs 1 KB of reading.

    OSError (missing, unreadable) is the caller's to report."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(MAX_PREFIX)     # all of a short file: its length names the error
        r = _Reader(memoryview(prefix))
        header = _read_header(r)
        if max_pixels is not None:
            check_pixels(header.width, header.height, max_pixels)
        lengths = [r.unpack(_U32, f"length of substream {name}")[0] for name in SUBSTREAM_NAMES]
        expected = r.pos + sum(lengths) + _U32.size
        if size < expected:
            raise TruncatedBitstreamError(
                f"truncated .flic file: it is {size} bytes but its header says {expected}; "
                "the copy is incomplete, copy it again or re-encode")
        if size > expected:
            raise TrailingDataError(
                f".flic file has {size - expected} unexpected bytes after its checksum; "
                f"cut it to its first {expected} bytes or re-encode it")
        return prefix + f.read(expected - len(prefix))


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raise PixelLimitError if a width x height image is over ``max_pixels``."""
    if width * height > max_pixels:
        raise PixelLimitError(
            f"image {width}x{height} ({width * height / 1e6:.1f} Mpx) is over the pixel limit "
            f"of {max_pixels / 1e6:.1f} Mpx; raise it with --max-pixels (max_pixels=) if this "
            "machine has the memory")


# ---------------------------------------------------------------- decoder checks

def check_model(header: Header, model_name: str, weights_hash: bytes) -> None:
    """Raise ModelMismatchError unless the loaded model is the one that encoded."""
    if header.model_name != model_name or header.weights_hash != bytes(weights_hash):
        raise ModelMismatchError(
            f"bitstream was encoded with model {header.model_name} (weights "
            f"{header.weights_hash.hex()}) but {model_name} ({bytes(weights_hash).hex()}) is "
            f"loaded; decode with model {header.model_name} and those weights")


def table_index_crc(indices: np.ndarray) -> int:
    """CRC32 of one pass's probability-table indices, one uint8 each, in C order.

    ``indices``: integer array, (coded channels, positions) in coding order.
    """
    array = np.asarray(indices)
    if array.dtype.kind not in "iu":
        raise TypeError(f"table indices must be integers, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError("table indices must be in 0..255 to be checksummed as uint8")
    return zlib.crc32(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


INDEX_PASSES = ("anchor", "nonanchor")   # order of Header.index_crc


def check_table_indices(header: Header, which: str, indices: np.ndarray) -> None:
    """Raise BackendMismatchError if this pass's table indices differ from the encoder's.

    ``which`` is "anchor" or "nonanchor"; call it before decoding that pass.
    """
    if which not in INDEX_PASSES:
        raise ValueError(f"which must be one of {INDEX_PASSES}, got {which!r}")
    stored = header.index_crc[INDEX_PASSES.index(which)]
    computed = table_index_crc(indices)
    if computed != stored:
        raise BackendMismatchError(
            f"{which} probability-table indices differ from the encoder's (CRC {computed:#010x}"
            f" != {stored:#010x}), which the exact entropy path rules out for intact files: "
            "the file is damaged or this engine is broken; re-encode the source image")


def reconstruction_crc(image: np.ndarray) -> int:
    """CRC32 of a decoded image: uint8 (H, W, 3) or (H, W) for greyscale, C order."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"a reconstruction must be uint8, got dtype {array.dtype}")
    return zlib.crc32(np.ascontiguousarray(array))


def check_reconstruction(header: Header, image: np.ndarray) -> None:
    """Strict decoding: raise ReconstructionMismatchError unless the header holds a
    reconstruction CRC and ``image`` (the decoder's final output) matches it."""
    if header.recon_crc is None:
        raise ReconstructionMismatchError(
            "strict decoding needs the encoder's reconstruction CRC, which this file does not "
            "hold (compressed with --no-checksum); decode without --strict")
    computed = reconstruction_crc(image)
    if computed != header.recon_crc:
        raise ReconstructionMismatchError(
            f"the decoded image differs from the encoder's reconstruction (CRC {computed:#010x}"
            f" != {header.recon_crc:#010x}): the symbols are the encoder's, g_s rounded "
            "differently; decode with the encoder's backend, device and dtype, or drop "
            "--strict (strict=False) to accept it")
