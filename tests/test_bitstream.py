"""Bitstream v1: round trips, one test per error, and a seeded fuzz loop."""
from __future__ import annotations

import random
import struct
import zlib

import numpy as np
import pytest

from fastlic import errors
from fastlic.runtime import bitstream as fb
from fastlic.runtime.bitstream import Bitstream, ColorLayout, Header

HASH = bytes(range(8))


def make_header(**changes) -> Header:
    fields = dict(model_name="tiny-test", weights_hash=HASH, quality=3, height=17, width=23,
                  color=ColorLayout.RGB, channel_mask=(True, False, True, True, False),
                  index_crc=(0x12345678, 0xFFFFFFFF))
    fields.update(changes)
    return Header(**fields)


def make_stream(header: Header | None = None, seed: int = 0) -> Bitstream:
    rng = random.Random(seed)
    parts = tuple(rng.randbytes(n) for n in (rng.randint(0, 40), rng.randint(1, 60), 0))
    return Bitstream(header or make_header(), parts)


def with_crc(body: bytes) -> bytes:
    """Re-seal an edited stream so that only the structural check can fail."""
    return body + struct.pack("<I", zlib.crc32(body))


def header_size(h: Header) -> int:
    return 4 + 1 + 1 + len(h.model_name) + 20 + (h.num_channels + 7) // 8 + 9


@pytest.mark.parametrize("changes", [
    {},
    dict(channel_mask=(True,)),
    dict(channel_mask=(False,)),
    dict(channel_mask=tuple(i % 3 == 0 for i in range(fb.MAX_CHANNELS))),
    dict(channel_mask=(True,) * 8),
    dict(channel_mask=(True,) * 9),
    dict(color=ColorLayout.GRAY, height=1, width=1),
    dict(height=fb.MAX_SIDE, width=fb.MAX_PIXELS // fb.MAX_SIDE),
    dict(height=fb.MAX_PIXELS // fb.MAX_SIDE, width=fb.MAX_SIDE),
    dict(quality=0, index_crc=(0, 0)),
    dict(quality=255, model_name="m" * fb.MAX_NAME_LEN),
    dict(model_name="!", weights_hash=b"\xff" * 8),
])
def test_round_trip(changes):
    bs = make_stream(make_header(**changes), seed=len(changes))
    data = fb.pack(bs)
    assert fb.unpack(data) == bs
    assert fb.peek_header(data) == bs.header
    assert fb.unpack(bytearray(data)) == bs
    assert len(data) == header_size(bs.header) + 12 + sum(map(len, bs.substreams)) + 4


def test_layout_prefix_and_mask_bit_order():
    data = fb.pack(make_stream())
    assert data[:6] == b"FLIC\x01\x09" and data[6:15] == b"tiny-test"
    assert data[35:36] == bytes([0b10110000])   # channel 0 is the most significant bit


def test_header_normalises_numpy_values():
    h = make_header(quality=np.uint8(7), height=np.int64(5), color=3,
                    channel_mask=np.array([1, 0, 1], dtype=bool), index_crc=[1, 2])
    assert (h.quality, h.height, h.color, h.channel_mask, h.index_crc) == (
        7, 5, ColorLayout.RGB, (True, False, True), (1, 2))
    assert type(h.quality) is int and type(h.channel_mask[0]) is bool


@pytest.mark.parametrize("changes", [
    dict(model_name=""), dict(model_name="x" * 65), dict(model_name="has space"),
    dict(model_name="caf\u00e9"), dict(model_name=b"bytes"),
    dict(weights_hash=b"short"), dict(weights_hash="01234567"),
    dict(quality=256), dict(quality=-1), dict(quality=1.5),
    dict(height=0), dict(width=0), dict(height=fb.MAX_SIDE + 1),
    dict(height=fb.MAX_SIDE, width=fb.MAX_SIDE),
    dict(color=2), dict(channel_mask=()), dict(channel_mask=(True,) * 4097),
    dict(index_crc=(1,)), dict(index_crc=(1, 1 << 32)), dict(index_crc=(-1, 0)),
])
def test_bad_header_values_raise_typed_error(changes):
    with pytest.raises(errors.CorruptBitstreamError):
        make_header(**changes)


@pytest.mark.parametrize("parts", [(b"", b""), (b"",) * 4, (b"", b"", 5), (b"", b"", "s")])
def test_bad_substreams_raise_typed_error(parts):
    with pytest.raises(errors.CorruptBitstreamError):
        Bitstream(make_header(), parts)


def test_error_messages_are_one_line():
    data = fb.pack(make_stream())
    for bad in (b"XLIC" + data[4:], data[:4] + b"\x02" + data[5:], data[:-1], data + b"\0"):
        with pytest.raises(errors.BitstreamError) as info:
            fb.unpack(bad)
        assert "\n" not in str(info.value) and str(info.value)


@pytest.mark.parametrize("data", [b"XLIC\x01", b"\x89PNG\r\n\x1a\n", b"FLIX", b"F\x00"])
def test_bad_magic(data):
    with pytest.raises(errors.BadMagicError):
        fb.unpack(data + fb.pack(make_stream())[4:])


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unsupported_version(version):
    data = bytearray(fb.pack(make_stream()))
    data[4] = version
    with pytest.raises(errors.UnsupportedVersionError):
        fb.unpack(bytes(data))


def test_every_truncation_is_truncated_error():
    data = fb.pack(make_stream())
    for n in range(len(data)):
        with pytest.raises(errors.TruncatedBitstreamError):
            fb.unpack(data[:n])
        with pytest.raises(errors.TruncatedBitstreamError):
            fb.peek_header(data[:n])


@pytest.mark.parametrize("extra", [b"\0", b"garbage", b"FLIC" * 100])
def test_trailing_data(extra):
    with pytest.raises(errors.TrailingDataError):
        fb.unpack(fb.pack(make_stream()) + extra)


def test_inflated_length_is_truncated_without_allocating():
    h = make_header()
    body = bytearray(fb.pack(make_stream(h))[:-4])
    struct.pack_into("<I", body, header_size(h), 0xFFFFFFFF)
    with pytest.raises(errors.TruncatedBitstreamError):
        fb.unpack(with_crc(bytes(body)))


def edit_header_field(offset: int, fmt: str, value: int) -> bytes:
    body = bytearray(fb.pack(make_stream())[:-4])
    struct.pack_into(fmt, body, offset, value)
    return with_crc(bytes(body))


# offsets in make_header(): name at 6..15, hash 15, quality 23, height 24, width 28,
# colour 32, channel count 33, mask 35, index CRCs 36, substream count 44
@pytest.mark.parametrize("offset,fmt,value", [
    (24, "<I", 0), (28, "<I", 0), (24, "<I", 40000), (28, "<I", 1_000_000_000),
    (24, "<I", 0xFFFFFFFF), (32, "<B", 0), (32, "<B", 4),
    (33, "<H", 0), (33, "<H", 4097), (44, "<B", 2), (44, "<B", 255),
    (5, "<B", 0), (5, "<B", 65), (6, "<B", 0x20), (6, "<B", 0x7F), (6, "<B", 0xE9),
    (35, "<B", 0b10110001), (35, "<B", 0b10110100),
])
def test_invalid_field_is_corrupt(offset, fmt, value):
    with pytest.raises(errors.CorruptBitstreamError):
        fb.unpack(edit_header_field(offset, fmt, value))


def test_absurd_size_message_names_the_field():
    with pytest.raises(errors.CorruptBitstreamError, match="image width 1000000000"):
        fb.unpack(edit_header_field(28, "<I", 1_000_000_000))


def test_every_bit_flip_fails_the_checksum_or_a_field():
    data = fb.pack(make_stream())
    for i in range(len(data) * 8):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(errors.BitstreamError):
            fb.unpack(bytes(bad))
    payload_flip = bytearray(data)
    payload_flip[-6] ^= 1
    with pytest.raises(errors.CorruptBitstreamError, match="checksum"):
        fb.unpack(bytes(payload_flip))


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    kind = rng.randrange(5)
    pos = rng.randrange(len(buf))
    if kind == 0:
        buf[pos] ^= 1 << rng.randrange(8)
    elif kind == 1:
        buf[pos] = rng.randrange(256)
    elif kind == 2:
        del buf[pos:]
    elif kind == 3:
        buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
    else:
        del buf[pos:pos + rng.randint(1, 8)]
    if rng.random() < 0.3:   # re-seal so the structural checks, not the CRC, are hit
        buf = bytearray(with_crc(bytes(buf[:-4])))
    return bytes(buf)


def test_fuzz_only_typed_errors_or_exact_decode():
    rng = random.Random(1234)
    seeds = [fb.pack(make_stream(make_header(**c), seed=i)) for i, c in enumerate([
        {}, dict(channel_mask=(True,) * 9, color=1), dict(model_name="a" * 64)])]
    decoded = 0
    for _ in range(3000):
        data = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            data = mutate(data, rng) if data else data
        try:
            bs = fb.unpack(data)
        except errors.BitstreamError:
            continue
        decoded += 1
        assert fb.pack(bs) == data   # anything accepted is canonical
    assert decoded < 1000   # most mutations must be rejected


def test_check_model():
    h = make_header()
    fb.check_model(h, "tiny-test", HASH)
    for name, digest in (("other", HASH), ("tiny-test", b"\0" * 8)):
        with pytest.raises(errors.ModelMismatchError, match="decode with model tiny-test"):
            fb.check_model(h, name, digest)


def test_check_table_indices():
    anchor = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert fb.table_index_crc(anchor) == zlib.crc32(bytes(range(12)))
    nonanchor = np.zeros((3, 4), dtype=np.uint8)
    h = make_header(index_crc=(fb.table_index_crc(anchor), fb.table_index_crc(nonanchor)))
    assert fb.table_index_crc(anchor) == fb.table_index_crc(anchor.astype(np.int16))
    fb.check_table_indices(h, "anchor", anchor)
    fb.check_table_indices(h, "nonanchor", nonanchor)
    with pytest.raises(errors.BackendMismatchError):
        fb.check_table_indices(h, "anchor", anchor + 1)
    with pytest.raises(errors.BackendMismatchError):
        fb.check_table_indices(h, "nonanchor", anchor)
    with pytest.raises(ValueError):
        fb.table_index_crc(np.array([256]))
