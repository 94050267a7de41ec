"""What one request does with its body: cheap header checks on the event loop, then
the codec work on a worker thread. Every function takes and returns whole byte
strings, so a response is complete or is an error, never partial.

    compress:   body ─check_image_header─▶ (admit) ─read_image─▶ uint8 ─compress─▶ .flic
    decompress: body ─flic_codec─────────▶ (admit) ─decompress─▶ uint8 ─encode_image─▶ PNG|raw
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import FastlicError, ImageFormatError, ModelMismatchError, PixelLimitError
from ..runtime.bitstream import ColorLayout, check_pixels, peek_header
from ..runtime.image import read_image

OUTPUT_FORMATS = ("png", "raw")
# zlib level of the PNGs served: a Kodak image in 100 ms (290 at Pillow's 6), no larger
PNG_LEVEL = 1
BODY_NAME = "the request body"
_PIL_ERRORS = (OSError, ValueError, EOFError, SyntaxError)


def check_image_header(body: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the image's header alone; ImageFormatError if Pillow cannot
    open it, PixelLimitError if it is over ``max_pixels``. Decodes no pixels."""
    try:
        with Image.open(io.BytesIO(body)) as im:
            width, height = im.size
    except Image.DecompressionBombError as exc:
        raise PixelLimitError(f"{BODY_NAME} is over Pillow's pixel limit ({exc})") from None
    except UnidentifiedImageError:
        raise ImageFormatError(f"cannot read {BODY_NAME} as an image: Pillow recognises no "
                               "image format in it; send a PNG, JPEG, WebP or TIFF file") from None
    except _PIL_ERRORS as exc:
        raise ImageFormatError(f"cannot read {BODY_NAME} as an image: {exc}") from None
    check_pixels(width, height, max_pixels)
    return width, height


def flic_codec(body: bytes, codecs: dict):
    """The loaded codec (quality -> Codec) for a .flic body, from its checked header: a
    BitstreamError if it is not one, ModelMismatchError if its quality is not loaded,
    PixelLimitError if it is over that codec's limit."""
    header = peek_header(body)
    codec = codecs.get(header.quality)
    if codec is None:
        raise ModelMismatchError(
            f"the file was coded at quality {header.quality} ({header.model_name}); this "
            f"service loads qualities {sorted(codecs)}: decode it where that model is loaded")
    check_pixels(header.width, header.height, codec.max_pixels)
    return codec


def compress_body(codec, body: bytes, timer=None, drop_alpha: bool = False,
                  checksum: bool = True) -> bytes:
    """Image file bytes -> .flic bytes."""
    with _stage(timer, "read_image"):
        rgb, layout = _read_body(body, drop_alpha)
    image = rgb[:, :, 0] if layout == ColorLayout.GRAY else rgb
    return codec.compress(image, timer=timer, checksum=checksum)


def decompress_body(codec, body: bytes, fmt: str, timer=None) -> tuple[bytes, dict]:
    """.flic bytes -> (image bytes, headers) in ``fmt`` ("png" or "raw")."""
    image = codec.decompress(body, timer=timer)
    with _stage(timer, f"encode_{fmt}"):
        return encode_image(image, fmt)


def encode_image(image: np.ndarray, fmt: str) -> tuple[bytes, dict]:
    """uint8 (H, W) or (H, W, 3) -> (bytes, response headers). raw: the pixels row by row,
    interleaved, with the shape in X-Image-Width, -Height and -Channels."""
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    shape = {"X-Image-Width": str(width), "X-Image-Height": str(height),
             "X-Image-Channels": str(channels)}
    if fmt == "raw":
        return np.ascontiguousarray(image).tobytes(), {**shape,
                                                       "Content-Type": "application/octet-stream"}
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue(), {**shape, "Content-Type": "image/png"}


def _stage(timer, name: str):
    return contextlib.nullcontext() if timer is None else timer.stage(name)


def _read_body(body: bytes, drop_alpha: bool) -> tuple[np.ndarray, ColorLayout]:
    """read_image on the bytes (it reads a PNG's bit depth from the file, so it gets
    one: a private temporary file, removed at once); errors name the body, not the file."""
    fd, path = tempfile.mkstemp(prefix="fastlic-serve-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return read_image(path, drop_alpha=drop_alpha)
    except FastlicError as exc:
        raise type(exc)(str(exc).replace(path, BODY_NAME)) from None
    finally:
        os.unlink(path)
