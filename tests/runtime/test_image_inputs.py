"""What read_image accepts, converts and refuses (issue 16, item 3): deep images,
EXIF orientation, ICC profiles, CMYK and multi-frame files. Every fixture is made
in tmp_path; ICC profiles are built by hand (ICC v2 matrix/shaper) so that a
non-sRGB one exists offline."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from fastlic.errors import ImageFormatError
from fastlic.runtime.bitstream import ColorLayout
from fastlic.runtime.image import read_image

RNG = np.random.default_rng(16)
PERCEPTUAL = ImageCms.Intent.PERCEPTUAL


def _pixels(shape, levels=256) -> np.ndarray:
    return (RNG.integers(0, levels, shape) * (255 // (levels - 1))).astype(np.uint8)


# --- hand-built files -----------------------------------------------------------------

def _png16(path, samples: np.ndarray, colour_type: int) -> None:
    """uint16 (H, W, C) -> a 16-bit PNG (colour type 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA)."""
    h, w = samples.shape[:2]
    rows = b"".join(b"\0" + samples[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def _xyz(xyz) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(map(_s15, xyz))


def _icc(space: bytes, description: str, tags: list[tuple[bytes, bytes]]) -> bytes:
    """An ICC v2 display profile (PCS XYZ, D50) with a description and the given tags."""
    text = description.encode() + b"\0"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 78),
            (b"wtpt", _xyz(D50)), (b"cprt", b"text\0\0\0\0none\0"), *tags]
    start, table, data = 132 + 12 * len(tags), b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", start + len(data), len(body))
        data += body
    header = (struct.pack(">I", start + len(data)) + b"\0" * 4 + bytes([2, 0x10, 0, 0]) + b"mntr"
              + space + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 28 + b"".join(map(_s15, D50))
              + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + data


D50 = (0.9642, 1.0, 0.8249)
GAMMA = 563 / 256                                   # 2.2 as u8Fixed8
ADOBE_D50 = np.array([(0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446)])
SRGB_D50 = np.array([(0.4360, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)])


def _curve(gamma: float) -> bytes:
    return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))


def adobe_like() -> bytes:
    """Adobe RGB (1998) primaries (D50-adapted) with a 2.2 gamma: wider than sRGB."""
    return _icc(b"RGB ", "Adobe-like test RGB", [
        *[(sig, _xyz(c)) for sig, c in zip((b"rXYZ", b"gXYZ", b"bXYZ"), ADOBE_D50)],
        *[(sig, _curve(GAMMA)) for sig in (b"rTRC", b"gTRC", b"bTRC")]])


def grey_gamma(gamma: float) -> bytes:
    return _icc(b"GRAY", f"test grey gamma {gamma}", [(b"kTRC", _curve(gamma))])


def srgb() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _cms(image: Image.Image, profile: bytes) -> np.ndarray:
    """ImageCms's own conversion of `image` from `profile` to sRGB (the oracle)."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    return np.asarray(ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"),
                                                renderingIntent=PERCEPTUAL, outputMode="RGB"))


def _srgb_encoded(linear: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] (clipped) -> sRGB values 0..255 (float)."""
    linear = np.clip(linear, 0, 1)
    return np.round(255 * np.where(linear <= 0.0031308, 12.92 * linear,
                                   1.055 * linear ** (1 / 2.4) - 0.055))


def _adobe_to_srgb(rgb: np.ndarray) -> np.ndarray:
    """The conversion in numpy: decode gamma, Adobe -> XYZ (D50) -> sRGB, sRGB curve."""
    return _srgb_encoded((rgb / 255.0) ** GAMMA @ ADOBE_D50 @ np.linalg.inv(SRGB_D50))


# --- deep images ------------------------------------------------------------------------

@pytest.mark.parametrize("colour_type, channels", [(2, 3), (6, 4), (4, 2), (0, 1)])
def test_16bit_png_is_refused_not_truncated(tmp_path, colour_type, channels):
    path = tmp_path / "deep.png"
    _png16(path, RNG.integers(0, 65536, (4, 5, channels)), colour_type)
    with pytest.raises(ImageFormatError, match=r"16 bits per channel.*-depth 8") as info:
        read_image(path, drop_alpha=True)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_16bit_rgb_tiff_is_refused(tmp_path, planar):
    tifffile = pytest.importorskip("tifffile")
    samples = RNG.integers(0, 65536, (4, 5, 3)).astype(np.uint16)
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, samples if planar == "contig" else samples.transpose(2, 0, 1),
                     photometric="rgb", planarconfig=planar)
    assert Image.open(path).mode == "RGB"           # what Pillow would silently cut
    with pytest.raises(ImageFormatError, match="16 bits per channel"):
        read_image(path)


def test_16bit_ppm_is_refused(tmp_path):
    path = tmp_path / "deep.ppm"
    samples = RNG.integers(0, 65536, (4, 5, 3)).astype(">u2")
    path.write_bytes(b"P6\n5 4\n65535\n" + samples.tobytes())
    with pytest.raises(ImageFormatError, match="16 bits per channel"):
        read_image(path)


@pytest.mark.parametrize("mode, suffix", [("RGB", "png"), ("L", "png"), ("RGBA", "png"),
                                          ("RGB", "jpg"), ("L", "jpg"), ("RGB", "ppm")])
def test_ordinary_8bit_images_read_as_before(tmp_path, mode, suffix):
    shape = {"RGB": (6, 7, 3), "L": (6, 7), "RGBA": (6, 7, 4)}[mode]
    pixels = _pixels(shape)
    if mode == "RGBA":
        pixels[:, :, 3] = 255
    path = tmp_path / f"plain.{suffix}"
    Image.fromarray(pixels).save(path)
    raw = np.asarray(Image.open(path))
    rgb, layout = read_image(path)
    assert layout == (ColorLayout.GRAY if mode == "L" else ColorLayout.RGB)
    expected = np.repeat(raw[:, :, None], 3, axis=2) if mode == "L" else raw[:, :, :3]
    np.testing.assert_array_equal(rgb, expected)
    np.testing.assert_array_equal(read_image(path, frame=0)[0], rgb)


def test_empty_image_is_refused(tmp_path):
    path = tmp_path / "empty.png"
    _png16(path, np.zeros((4, 0, 3)), 2)
    with pytest.raises(ImageFormatError):
        read_image(path)


# --- EXIF orientation -------------------------------------------------------------------

@pytest.mark.parametrize("orientation, turns", [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_is_applied(tmp_path, orientation, turns):
    """Orientation 6 means 'rotate 90° clockwise to view', 8 anticlockwise, 3 half a turn."""
    pixels = _pixels((8, 16, 3), levels=2)          # landscape, so a turn changes the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / "tagged.jpg", exif=exif, quality=95)
    Image.fromarray(pixels).save(tmp_path / "plain.jpg", quality=95)
    stored = read_image(tmp_path / "plain.jpg")[0]  # the same JPEG data, untagged
    upright = read_image(tmp_path / "tagged.jpg")[0]
    np.testing.assert_array_equal(upright, np.rot90(stored, turns))


# --- ICC profiles -----------------------------------------------------------------------

def test_non_srgb_profile_is_converted_to_srgb(tmp_path):
    pixels = _pixels((8, 9, 3))
    path = tmp_path / "adobe.png"
    Image.fromarray(pixels).save(path, icc_profile=adobe_like())
    rgb, layout = read_image(path)
    assert layout == ColorLayout.RGB
    assert np.abs(rgb.astype(int) - pixels).max() > 20          # the colours did move
    np.testing.assert_array_equal(rgb, _cms(Image.fromarray(pixels), adobe_like()))
    assert np.abs(rgb - _adobe_to_srgb(pixels)).max() <= 1      # and to where they should


def test_icc_ignore_codes_the_raw_values(tmp_path):
    pixels = _pixels((8, 9, 3))
    path = tmp_path / "adobe.png"
    Image.fromarray(pixels).save(path, icc_profile=adobe_like())
    np.testing.assert_array_equal(read_image(path, icc="ignore")[0], pixels)


def test_rgba_with_profile_keeps_its_alpha_check(tmp_path):
    pixels = _pixels((8, 9, 4))
    pixels[:, :, 3] = 255
    path = tmp_path / "adobe.png"
    Image.fromarray(pixels).save(path, icc_profile=adobe_like())
    expected = _cms(Image.fromarray(pixels[:, :, :3]), adobe_like())
    np.testing.assert_array_equal(read_image(path)[0], expected)
    pixels[0, 0, 3] = 0
    Image.fromarray(pixels).save(path, icc_profile=adobe_like())
    with pytest.raises(ImageFormatError, match="drop-alpha"):
        read_image(path)


def test_srgb_tagged_image_is_unchanged(tmp_path):
    pixels = _pixels((8, 9, 3))
    path = tmp_path / "srgb.png"
    Image.fromarray(pixels).save(path, icc_profile=srgb())
    np.testing.assert_array_equal(read_image(path)[0], pixels)


def test_grey_profile_is_converted_and_stays_grey(tmp_path):
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = tmp_path / "grey.png"
    Image.fromarray(ramp).save(path, icc_profile=grey_gamma(1.8))
    rgb, layout = read_image(path)
    assert layout == ColorLayout.GRAY
    assert rgb[8, 0, 0] > 128 + 15                  # mid grey: gamma 1.8 is lighter than sRGB
    assert np.abs(rgb[:, :, 0] - _srgb_encoded((ramp / 255.0) ** (461 / 256))).max() <= 1
    np.testing.assert_array_equal(rgb, _cms(Image.fromarray(ramp), grey_gamma(1.8)))


@pytest.mark.parametrize("mode, profile", [("RGB", b"not a profile" * 20), ("L", adobe_like())])
def test_unusable_profile_is_refused_with_a_way_out(tmp_path, mode, profile):
    pixels = _pixels((4, 5, 3) if mode == "RGB" else (4, 5))
    path = tmp_path / "bad.png"
    Image.fromarray(pixels).save(path, icc_profile=profile)
    with pytest.raises(ImageFormatError, match="--icc ignore") as info:
        read_image(path)
    assert "\n" not in str(info.value)
    rgb = read_image(path, icc="ignore")[0]
    np.testing.assert_array_equal(rgb if mode == "RGB" else rgb[:, :, 0], pixels)


def test_profile_without_imagecms_is_refused_with_a_way_out(tmp_path, monkeypatch):
    import sys

    import PIL
    path = tmp_path / "adobe.png"
    Image.fromarray(_pixels((4, 5, 3))).save(path, icc_profile=adobe_like())
    monkeypatch.delattr(PIL, "ImageCms")
    monkeypatch.setitem(sys.modules, "PIL.ImageCms", None)      # import fails as without lcms
    with pytest.raises(ImageFormatError, match="no ImageCms.*--icc ignore"):
        read_image(path)


def test_bad_icc_choice_is_a_value_error(tmp_path):
    path = tmp_path / "plain.png"
    Image.fromarray(_pixels((4, 5, 3))).save(path)
    with pytest.raises(ValueError, match="convert"):
        read_image(path, icc="keep")


# --- CMYK, premultiplied alpha ------------------------------------------------------------

def test_untagged_cmyk_is_inverted_naively(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 0, 255],
                      [0, 0, 255, 128]]], np.uint8)
    path = tmp_path / "cmyk.tif"
    Image.frombytes("CMYK", (5, 1), cmyk.tobytes()).save(path)
    rgb, layout = read_image(path)
    assert layout == ColorLayout.RGB
    np.testing.assert_array_equal(rgb[0], [[255, 255, 255], [0, 255, 255], [255, 0, 255],
                                           [0, 0, 0], [127, 127, 0]])


def test_premultiplied_grey_alpha_tiff_is_read_as_grey(tmp_path):
    """Pillow opens grey + associated alpha TIFFs as mode La (it used to be refused)."""
    tifffile = pytest.importorskip("tifffile")
    pixels = _pixels((4, 5, 2))
    pixels[:, :, 1] = 255
    path = tmp_path / "assoc.tif"
    tifffile.imwrite(path, pixels, photometric="minisblack", extrasamples=["assocalpha"])
    assert Image.open(path).mode == "La"
    rgb, layout = read_image(path)
    assert layout == ColorLayout.GRAY
    np.testing.assert_array_equal(rgb, np.repeat(pixels[:, :, :1], 3, axis=2))


# --- frames -------------------------------------------------------------------------------

def _frames(n: int) -> list[np.ndarray]:
    """n distinct 4-colour RGB frames (exact in a GIF palette)."""
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [255, 255, 255]], np.uint8)
    return [colours[RNG.integers(0, 4, (6, 7))] for _ in range(n)]


def _save_frames(path, frames: list[np.ndarray]) -> None:
    first, *rest = [Image.fromarray(f) for f in frames]
    first.save(path, save_all=True, append_images=rest)


@pytest.mark.parametrize("suffix, n", [("tif", 3), ("gif", 2), ("png", 2), ("webp", 2)])
def test_multi_frame_file_needs_a_frame(tmp_path, suffix, n):
    frames = _frames(n)
    path = tmp_path / f"frames.{suffix}"
    if suffix == "webp":
        first, *rest = [Image.fromarray(f) for f in frames]
        first.save(path, save_all=True, append_images=rest, lossless=True)
    else:
        _save_frames(path, frames)
    with pytest.raises(ImageFormatError, match=rf"has {n} frames; pass --frame K \(0..{n - 1}\)"):
        read_image(path)
    for k, expected in enumerate(frames):
        np.testing.assert_array_equal(read_image(path, frame=k)[0], expected)


@pytest.mark.parametrize("frame", [3, -1])
def test_frame_out_of_range_is_refused(tmp_path, frame):
    path = tmp_path / "frames.tif"
    _save_frames(path, _frames(3))
    with pytest.raises(ImageFormatError, match=rf"no frame {frame}, it has 3"):
        read_image(path, frame=frame)


def test_single_frame_file_has_only_frame_0(tmp_path):
    path = tmp_path / "plain.png"
    Image.fromarray(_pixels((4, 5, 3))).save(path)
    with pytest.raises(ImageFormatError, match="no frame 1, it has 1"):
        read_image(path, frame=1)


def test_jpeg_with_extra_mpf_images_codes_the_primary_one(tmp_path):
    """Cameras store previews as MPF images; Pillow opens such JPEGs as MPO with
    n_frames > 1, which must not be refused as a multi-frame file."""
    primary, preview = _frames(2)
    path = tmp_path / "camera.jpg"
    Image.fromarray(primary).save(path, format="MPO", save_all=True,
                                  append_images=[Image.fromarray(preview)])
    with Image.open(path) as im:
        assert im.format == "MPO" and im.n_frames == 2
        first = np.asarray(im.convert("RGB"))
        im.seek(1)
        second = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(read_image(path)[0], first)
    np.testing.assert_array_equal(read_image(path, frame=1)[0], second)
