"""Reading and writing images: what fastlic codes, and what it refuses.

fastlic codes 8-bit RGB. Greyscale is coded as RGB and returned as greyscale.
Alpha is refused unless it is fully opaque (then nothing is lost by dropping it)
or the caller asks to drop it. 16-bit and other deep images are refused.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ImageFormatError
from ..model import STRIDE
from .bitstream import MAX_PIXELS, MAX_SIDE, ColorLayout

_DEEP_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def to_codable(array: np.ndarray, drop_alpha: bool = False) -> tuple[np.ndarray, ColorLayout]:
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> (uint8 (H, W, 3), layout)."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        dtype = getattr(array, "dtype", type(array).__name__)
        raise ImageFormatError(f"image must be a uint8 numpy array, got {dtype}; "
                               "convert 16-bit or float images to 8 bits first")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        layout, rgb = ColorLayout.GRAY, np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        if array.shape[2] == 4:
            if not drop_alpha and (array[:, :, 3] != 255).any():
                raise ImageFormatError("image has a transparent alpha channel, which fastlic does "
                                       "not code; pass --drop-alpha (drop_alpha=True) to code RGB only")
            array = array[:, :, :3]
        layout, rgb = ColorLayout.RGB, array
    else:
        raise ImageFormatError(f"image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}")
    h, w = rgb.shape[:2]
    if h < 1 or w < 1:
        raise ImageFormatError(f"image is empty: {w}x{h}")
    if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
        raise ImageFormatError(f"image {w}x{h} is too large: at most {MAX_SIDE} px a side and "
                               f"{MAX_PIXELS} pixels; split it into tiles")
    return np.ascontiguousarray(rgb), layout


def read_image(path: str | Path, drop_alpha: bool = False) -> tuple[np.ndarray, ColorLayout]:
    """Read an image file into (uint8 (H, W, 3), layout); ImageFormatError if not codable."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in _DEEP_MODES:
                raise ImageFormatError(f"{path}: {mode} images (16-bit or deeper) are not supported; "
                                       "fastlic codes 8-bit images, convert it first")
            if mode in ("P", "PA"):
                im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
            elif mode == "1":
                im = im.convert("L")
            elif mode == "LA":
                im = im.convert("RGBA")
            elif mode == "YCbCr":
                im = im.convert("RGB")
            elif im.mode not in ("L", "RGB", "RGBA"):
                raise ImageFormatError(f"{path}: colour mode {mode} is not supported; "
                                       "convert it to RGB or greyscale first")
            array = np.asarray(im)
    except ImageFormatError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageFormatError(f"cannot read {path} as an image: {exc}") from exc
    rgb, layout = to_codable(array, drop_alpha)
    if mode == "LA":  # greyscale that came through RGBA
        layout = ColorLayout.GRAY
    return rgb, layout


def from_codable(rgb: np.ndarray, layout: ColorLayout) -> np.ndarray:
    """Decoded (H, W, 3) uint8 -> the caller's layout ((H, W) for greyscale)."""
    if layout == ColorLayout.GRAY:
        return np.round(rgb.astype(np.float32).mean(axis=2)).astype(np.uint8)
    return rgb


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write bytes through a temporary file in the same folder, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write (H, W) or (H, W, 3) uint8 as PNG (or the format of the suffix), atomically."""
    import io
    buf = io.BytesIO()
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    Image.fromarray(image).save(buf, format=fmt)
    write_atomic(path, buf.getvalue())


def padded(n: int) -> int:
    """An image side padded to the model's stride."""
    return -(-n // STRIDE) * STRIDE


def model_input(rgb: np.ndarray) -> np.ndarray:
    """Codable uint8 (H, W, 3) -> what g_a sees: C-contiguous float32 (1, 3, H', W') in [0, 1],
    edge-padded to the stride."""
    h, w = rgb.shape[:2]
    x = np.pad(rgb, ((0, padded(h) - h), (0, padded(w) - w), (0, 0)), mode="edge")
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
    x /= np.float32(255.0)
    return x
