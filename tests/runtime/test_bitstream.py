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
    recon = 0 if h.recon_crc is None else 4
    return 4 + 1 + 1 + 1 + len(h.model_name) + 20 + (h.num_channels + 7) // 8 + 8 + recon + 1


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
    dict(recon_crc=0),
    dict(recon_crc=0xFFFFFFFF, channel_mask=(True,) * 9, color=ColorLayout.GRAY),
    dict(recon_crc=0x0BADF00D, model_name="m" * fb.MAX_NAME_LEN, index_crc=(0, 0)),
])
def test_round_trip(changes):
    bs = make_stream(make_header(**changes), seed=len(changes))
    data = fb.pack(bs)
    assert fb.unpack(data) == bs
    assert fb.peek_header(data) == bs.header
    assert fb.unpack(bytearray(data)) == bs
    assert len(data) == header_size(bs.header) + 12 + sum(map(len, bs.substreams)) + 4
    assert data[5] == bs.header.flags == (0 if bs.header.recon_crc is None else 1)


def test_layout_prefix_and_mask_bit_order():
    data = fb.pack(make_stream())
    assert data[:7] == b"FLIC\x02\x00\x09" and data[7:16] == b"tiny-test"
    assert data[36:37] == bytes([0b10110000])   # channel 0 is the most significant bit
    assert data[37:46] == struct.pack("<IIB", 0x12345678, 0xFFFFFFFF, 3)


def test_layout_of_the_reconstruction_crc():
    """Flags bit 0 set, and the CRC sits between the index CRCs and the substream count."""
    plain = fb.pack(make_stream())
    data = fb.pack(make_stream(make_header(recon_crc=0xA1B2C3D4)))
    assert data[5] == fb.FLAG_RECON_CRC
    assert data[45:50] == struct.pack("<IB", 0xA1B2C3D4, 3)
    assert len(data) == len(plain) + 4
    assert data[6:45] == plain[6:45] and data[50:-4] == plain[46:-4]


def test_header_normalises_numpy_values():
    h = make_header(quality=np.uint8(7), height=np.int64(5), color=3,
                    channel_mask=np.array([1, 0, 1], dtype=bool), index_crc=[1, 2],
                    recon_crc=np.uint32(9))
    assert (h.quality, h.height, h.color, h.channel_mask, h.index_crc, h.recon_crc) == (
        7, 5, ColorLayout.RGB, (True, False, True), (1, 2), 9)
    assert type(h.quality) is int and type(h.channel_mask[0]) is bool
    assert type(h.recon_crc) is int and h.flags == fb.FLAG_RECON_CRC
    assert make_header().recon_crc is None and make_header().flags == 0


@pytest.mark.parametrize("changes", [
    dict(model_name=""), dict(model_name="x" * 65), dict(model_name="has space"),
    dict(model_name="caf\u00e9"), dict(model_name=b"bytes"),
    dict(weights_hash=b"short"), dict(weights_hash="01234567"),
    dict(quality=256), dict(quality=-1), dict(quality=1.5),
    dict(height=0), dict(width=0), dict(height=fb.MAX_SIDE + 1),
    dict(height=fb.MAX_SIDE, width=fb.MAX_SIDE),
    dict(color=2), dict(channel_mask=()), dict(channel_mask=(True,) * 4097),
    dict(index_crc=(1,)), dict(index_crc=(1, 1 << 32)), dict(index_crc=(-1, 0)),
    dict(recon_crc=-1), dict(recon_crc=1 << 32), dict(recon_crc=1.5), dict(recon_crc="1"),
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
    for bad in (b"XLIC" + data[4:], data[:4] + b"\x01" + data[5:], data[:4] + b"\x03" + data[5:],
                data[:-1], data + b"\0"):
        with pytest.raises(errors.BitstreamError) as info:
            fb.unpack(bad)
        assert "\n" not in str(info.value) and str(info.value)


@pytest.mark.parametrize("data", [b"XLIC\x01", b"\x89PNG\r\n\x1a\n", b"FLIX", b"F\x00"])
def test_bad_magic(data):
    with pytest.raises(errors.BadMagicError):
        fb.unpack(data + fb.pack(make_stream())[4:])


@pytest.mark.parametrize("version", [0, 1, 3, 255])
def test_unsupported_version(version):
    data = bytearray(fb.pack(make_stream()))
    data[4] = version
    with pytest.raises(errors.UnsupportedVersionError, match=f"version {version} ") as info:
        fb.unpack(bytes(data))
    if version == 1:   # the old float-entropy format: says why and what to do
        assert "re-encode" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("recon_crc", [None, 0x01020304])
def test_every_truncation_is_truncated_error(recon_crc):
    data = fb.pack(make_stream(make_header(recon_crc=recon_crc)))
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


def edit_header_field(offset: int, fmt: str, value: int, header: Header | None = None) -> bytes:
    body = bytearray(fb.pack(make_stream(header))[:-4])
    struct.pack_into(fmt, body, offset, value)
    return with_crc(bytes(body))


# offsets in make_header(): flags 5, name length 6, name at 7..16, hash 16, quality 24,
# height 25, width 29, colour 33, channel count 34, mask 36, index CRCs 37, substream count 45
@pytest.mark.parametrize("offset,fmt,value", [
    (25, "<I", 0), (29, "<I", 0), (25, "<I", 40000), (29, "<I", 1_000_000_000),
    (25, "<I", 0xFFFFFFFF), (33, "<B", 0), (33, "<B", 4),
    (34, "<H", 0), (34, "<H", 4097), (45, "<B", 2), (45, "<B", 255),
    (6, "<B", 0), (6, "<B", 65), (7, "<B", 0x20), (7, "<B", 0x7F), (7, "<B", 0xE9),
    (36, "<B", 0b10110001), (36, "<B", 0b10110100),
])
def test_invalid_field_is_corrupt(offset, fmt, value):
    with pytest.raises(errors.CorruptBitstreamError):
        fb.unpack(edit_header_field(offset, fmt, value))


def test_absurd_size_message_names_the_field():
    with pytest.raises(errors.CorruptBitstreamError, match="image width 1000000000"):
        fb.unpack(edit_header_field(29, "<I", 1_000_000_000))


@pytest.mark.parametrize("flags", [0x02, 0x03, 0x80, 0xFE, 0xFF])
@pytest.mark.parametrize("recon_crc", [None, 7])
def test_unknown_flag_bits_are_corrupt(flags, recon_crc):
    data = edit_header_field(5, "<B", flags, make_header(recon_crc=recon_crc))
    for parse in (fb.unpack, fb.peek_header):
        with pytest.raises(errors.CorruptBitstreamError, match="flags"):
            parse(data)


def test_flag_bit_0_that_disagrees_with_the_layout_is_rejected():
    """Setting or clearing bit 0 (CRC re-sealed) shifts every later field: never accepted."""
    for header, flags in ((make_header(), 1), (make_header(recon_crc=7), 0)):
        with pytest.raises(errors.BitstreamError):
            fb.unpack(edit_header_field(5, "<B", flags, header))


@pytest.mark.parametrize("recon_crc", [None, 0x5A5A5A5A])
def test_every_bit_flip_fails_the_checksum_or_a_field(recon_crc):
    data = fb.pack(make_stream(make_header(recon_crc=recon_crc)))
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
        {}, dict(channel_mask=(True,) * 9, color=1), dict(model_name="a" * 64),
        dict(recon_crc=0xDEADBEEF)])]
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


def test_check_reconstruction():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    grey = rgb[:, :, 0]                                 # a non-contiguous view
    assert fb.reconstruction_crc(rgb) == zlib.crc32(bytes(range(18)))
    assert fb.reconstruction_crc(grey) == zlib.crc32(bytes([0, 3, 6, 9, 12, 15]))
    with pytest.raises(errors.ReconstructionMismatchError, match="does not hold"):
        fb.check_reconstruction(make_header(), rgb)     # strict needs a stored CRC
    h = make_header(recon_crc=fb.reconstruction_crc(rgb))
    fb.check_reconstruction(h, rgb.copy())
    other = rgb.copy()
    other[1, 2, 0] += 1
    for bad in (other, grey):
        with pytest.raises(errors.ReconstructionMismatchError, match="--strict") as info:
            fb.check_reconstruction(h, bad)
        assert isinstance(info.value, errors.BackendMismatchError)
        assert "\n" not in str(info.value)
    with pytest.raises(TypeError):
        fb.reconstruction_crc(rgb.astype(np.int16))
