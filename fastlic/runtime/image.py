"""Reading and writing images: what fastlic codes, and what it refuses.

fastlic codes 8-bit sRGB pixels, upright. Reading a file (``read_image``):

* Greyscale is coded as RGB and returned as greyscale (grey + alpha too).
* Alpha is refused unless it is fully opaque (then nothing is lost by dropping it)
  or the caller asks to drop it (``drop_alpha``, ``--drop-alpha``). Palette images
  become RGB or RGBA, 1-bit images greyscale; premultiplied alpha (``RGBa``, ``La``)
  is unpremultiplied, a padding channel (``RGBX``) dropped.
* More than 8 bits per channel is refused, including the 16-bit PNG, TIFF and PPM
  files that Pillow would quietly cut to 8 bits (their bit depth is read from the
  file: PNG IHDR, TIFF BitsPerSample, PPM maxval).
* The EXIF orientation is applied: the coded image is the upright one, so the
  decoded PNG (which has no EXIF) looks like the original did.
* An embedded ICC profile is converted to sRGB (LittleCMS through PIL.ImageCms,
  perceptual intent) unless converting would change no value by more than 1 (an
  sRGB profile: nothing is done). The decoded PNG has no profile, so viewers show it
  as sRGB, which it then is. ``icc="ignore"`` (``--icc ignore``) codes the values as
  they are; an unusable profile (unreadable, wrong colour space, no ImageCms) is
  refused with that way out. PNG gAMA/cHRM chunks are not applied.
* CMYK goes through its ICC profile to sRGB; without one (or with ``icc="ignore"``)
  it is inverted naively (R = (255 - C)(255 - K) / 255, as Pillow and browsers show
  untagged CMYK).
* A file of several frames or pages (TIFF, GIF, APNG, WebP) is refused unless a
  frame is chosen (``frame=k``, ``--frame k``). JPEGs with extra MPF images (camera
  previews, stereo pairs) and Photoshop files with layers code the primary image.

Every refusal is an ImageFormatError (CLI exit 4) whose message says what to do.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageFormatError, OutputError
from ..stages import STRIDE
from .bitstream import MAX_PIXELS, MAX_SIDE, ColorLayout

_DEEP_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_TO_DEEP = ("convert it to 8 bits first, e.g. with `convert in.png -depth 8 out.png` "
            "or Pillow")
_PLAIN_MODES = {"L", "LA", "RGB", "RGBA", "CMYK"}          # what _plain() returns
_CONVERTED_MODES = {"1": "L", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "YCbCr": "RGB"}
_PRIMARY_FIRST = {"MPO", "PSD"}     # extra frames are previews or layers of one picture
_ICC_CHOICES = ("convert", "ignore")
_ICC_WAY_OUT = 'pass --icc ignore (icc="ignore") to code the pixel values as they are'
# What Pillow raises for files it cannot read (its plugins raise EOFError and
# SyntaxError for some malformed files).
_READ_ERRORS = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)


def _check_size(h: int, w: int) -> None:
    """Refuse an empty image or one larger than the bitstream can describe."""
    if h < 1 or w < 1:
        raise ImageFormatError(f"image is empty: {w}x{h}")
    if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
        raise ImageFormatError(f"image {w}x{h} is too large: at most {MAX_SIDE} px a side and "
                               f"{MAX_PIXELS} pixels; split it into tiles")


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
    _check_size(*rgb.shape[:2])
    return np.ascontiguousarray(rgb), layout


def _select_frame(im: Image.Image, path: str | Path, frame: int | None) -> None:
    """Seek to the frame to code; refuse several frames when none is chosen."""
    n = getattr(im, "n_frames", 1)
    if frame is None:
        if n > 1 and im.format not in _PRIMARY_FIRST:
            raise ImageFormatError(f"{path} has {n} frames; pass --frame K (0..{n - 1}) "
                                   "(frame=K) to code one")
        return
    try:
        if frame < 0:
            raise EOFError
        im.seek(frame)
    except EOFError:
        raise ImageFormatError(f"{path}: no frame {frame}, it has {n}; pass --frame K "
                               f"with K in 0..{n - 1}") from None


def _source_bits(im: Image.Image, path: str | Path) -> int:
    """Bits per channel as the file stores them, for the formats whose deep images
    Pillow opens as 8-bit modes (cutting the low bits); 8 for the others."""
    if im.format == "PNG":
        with open(path, "rb") as f:
            head = f.read(33)               # signature, then IHDR: bit depth at byte 24
        return head[24] if head[12:16] == b"IHDR" else 8
    if im.format == "TIFF":
        bits = im.tag_v2.get(258, 8)        # BitsPerSample: one value or one per sample
        return max(bits) if isinstance(bits, tuple) else int(bits)
    args = im.tile[0][3] if im.tile else None               # the decoder's arguments
    if im.format == "PPM" and isinstance(args, tuple):
        return int(args[-1]).bit_length()                   # (rawmode, maxval)
    return 8


def _refuse_deep(im: Image.Image, path: str | Path) -> None:
    """Refuse an image with more than 8 bits per channel (call before im.load())."""
    bits = _source_bits(im, path)
    if bits > 8:
        raise ImageFormatError(f"{path} has {bits} bits per channel and fastlic codes 8; "
                               + _TO_DEEP)
    if im.mode in _DEEP_MODES:
        raise ImageFormatError(f"{path}: {im.mode} images (16-bit or deeper) are not "
                               "supported; " + _TO_DEEP)


def _plain(im: Image.Image, path: str | Path) -> Image.Image:
    """An image of any mode Pillow reads -> L, LA, RGB, RGBA or CMYK (ICC profile kept)."""
    if im.mode in ("P", "PA"):
        return im.convert("RGBA" if ("transparency" in im.info or im.mode == "PA") else "RGB")
    if im.mode in _CONVERTED_MODES:
        return im.convert(_CONVERTED_MODES[im.mode])
    if im.mode not in _PLAIN_MODES:
        raise ImageFormatError(f"{path}: colour mode {im.mode} is not supported; "
                               "convert it to RGB or greyscale first")
    return im


def _changes_nothing(transform, mode: str) -> bool:
    """Whether a transform to sRGB moves no value of a 16-level grid in `mode`
    (L, RGB or CMYK) by more than 1 from reading the values as sRGB already."""
    levels = np.linspace(0, 255, 16).astype(np.uint8)
    n = len(mode)
    grid = np.stack(np.meshgrid(*[levels] * n, indexing="ij"), -1).reshape(-1, n)
    probe = Image.frombytes(mode, (len(grid), 1), grid.tobytes())
    from PIL import ImageCms
    moved = np.asarray(ImageCms.applyTransform(probe, transform), np.int16)
    return int(np.abs(moved - np.asarray(probe.convert("RGB"), np.int16)).max()) <= 1


def _srgb_transform(profile: bytes, mode: str, path: str | Path):
    """An ICC profile (bytes) -> a LittleCMS transform from `mode` (L, RGB or CMYK)
    to sRGB RGB, or None when the profile is sRGB already."""
    try:
        from PIL import ImageCms
    except ImportError:
        raise ImageFormatError(f"{path} has an ICC colour profile but this Pillow has no "
                               "ImageCms (LittleCMS) to convert it to sRGB; "
                               + _ICC_WAY_OUT) from None
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        transform = ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), mode, "RGB",
                                            renderingIntent=ImageCms.Intent.PERCEPTUAL)
    except (OSError, ImageCms.PyCMSError) as exc:
        raise ImageFormatError(f"{path}: cannot convert its ICC colour profile to sRGB "
                               f"({exc}); {_ICC_WAY_OUT}") from None
    return None if _changes_nothing(transform, mode) else transform


def _to_srgb(im: Image.Image, path: str | Path) -> Image.Image:
    """L, LA, RGB, RGBA or CMYK in its embedded ICC profile's colours -> the same mode
    (CMYK: RGB) in sRGB; unchanged without a profile or with an sRGB one."""
    profile = im.info.get("icc_profile")
    if not profile:
        return im
    alpha = im.getchannel("A") if im.mode in ("LA", "RGBA") else None
    colour = im.convert(im.mode[:-1]) if alpha is not None else im      # LA -> L, RGBA -> RGB
    transform = _srgb_transform(profile, colour.mode, path)
    if transform is None:
        return im
    from PIL import ImageCms
    out = ImageCms.applyTransform(colour, transform)        # RGB (grey: R = G = B)
    if colour.mode == "L":
        out = out.convert("L")
    if alpha is not None:
        out.putalpha(alpha)
    return out


def _pixels(im: Image.Image, path: str | Path, frame: int | None,
            icc: str) -> tuple[np.ndarray, bool]:
    """An opened image -> (uint8 (H, W), (H, W, 3) or (H, W, 4) upright sRGB pixels,
    whether the image is greyscale)."""
    _select_frame(im, path, frame)
    _refuse_deep(im, path)              # before load(): reads the tile and tags
    _check_size(im.height, im.width)    # before decoding a huge image
    ImageOps.exif_transpose(im, in_place=True)
    im = _plain(im, path)
    if icc == "convert":
        im = _to_srgb(im, path)
    grey = im.mode in ("L", "LA")
    if im.mode in ("LA", "CMYK"):
        im = im.convert("RGBA" if im.mode == "LA" else "RGB")
    return np.asarray(im), grey


def read_image(path: str | Path, drop_alpha: bool = False, frame: int | None = None,
               icc: str = "convert") -> tuple[np.ndarray, ColorLayout]:
    """Read an image file into (uint8 (H, W, 3) upright sRGB, layout); ImageFormatError
    if not codable. `frame` picks a frame of a multi-frame file (required there);
    `icc` is "convert" (embedded profile -> sRGB) or "ignore" (values as they are)."""
    if icc not in _ICC_CHOICES:
        raise ValueError(f"icc must be one of {_ICC_CHOICES}, got {icc!r}")
    try:
        with Image.open(path) as im:
            array, grey = _pixels(im, path, frame, icc)
    except ImageFormatError:
        raise
    except _READ_ERRORS as exc:
        raise ImageFormatError(f"cannot read {path} as an image: {exc}") from exc
    rgb, layout = to_codable(array, drop_alpha)
    return rgb, (ColorLayout.GRAY if grey else layout)


def from_codable(rgb: np.ndarray, layout: ColorLayout) -> np.ndarray:
    """Decoded (H, W, 3) uint8 -> the caller's layout ((H, W) for greyscale)."""
    if layout == ColorLayout.GRAY:   # round((r + g + b) / 3) in integers: no float copy
        total = rgb[:, :, 0].astype(np.uint16)
        total += rgb[:, :, 1]
        total += rgb[:, :, 2]
        total += 1
        total //= 3
        return total.astype(np.uint8)
    return rgb


# ---- writing: an output appears whole or not at all, and only where it may -----------

_NOT_REGULAR = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                (stat.S_ISBLK, "a device"))
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}


def check_output(path: str | Path, force: bool = False) -> None:
    """Raise OutputError unless ``path`` can be written now: its folder exists and is
    writable, and nothing is at ``path`` or (with ``force``) a regular file. Never
    anything else, even with ``force``: a directory, device, FIFO, socket or symlink."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise OutputError(f"output folder {folder} {what}; create it or pick another output path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} is not writable; pick another output path")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _output_error(path, exc) from None
    if stat.S_ISDIR(mode):
        raise OutputError(f"{path} is a directory; give a file name, or --out-dir {path}")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
        raise OutputError(f"{path} is {kind}, which fastlic never replaces (not even with "
                          "--force); pick another output path")
    if not force:
        raise OutputError(f"{path} exists; pass --force to overwrite")


def umask() -> int:
    """The process umask: from /proc where Linux shows it (no change, no race), else
    set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _output_error(path: Path, exc: OSError) -> OutputError:
    """An OSError while writing ``path`` -> a one-line OutputError that says what to do."""
    elsewhere = "pick another output path"
    denied = (f"permission denied in {path.parent}", elsewhere)
    full = ("no space left on its device", "free some space or write elsewhere")
    reasons = {errno.ENOENT: (f"its folder {path.parent} does not exist (any more)",
                              "create it or pick another output path"),
               errno.EACCES: denied, errno.EPERM: denied,
               errno.EROFS: (f"{path.parent} is on a read-only file system", elsewhere),
               errno.ENOSPC: full, errno.EDQUOT: full,
               errno.EISDIR: ("it is a directory", "give a file name")}
    reason, advice = reasons.get(exc.errno, (exc.strerror or str(exc), elsewhere))
    return OutputError(f"cannot write {path}: {reason}; {advice}")


def _claim(tmp: str, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if the name is free (FileExistsError if not,
    even when it was taken a moment ago): a hard link, or where the file system has
    none, an O_EXCL placeholder that the rename then replaces."""
    try:
        os.link(tmp, path)
        return
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        os.replace(tmp, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _move_in(tmp: str, path: Path, force: bool) -> None:
    """The finished ``tmp`` becomes ``path``. A file that appeared there since the early
    check is refused without ``force``; with it, only a regular file is replaced."""
    try:
        _claim(tmp, path)
        return
    except FileExistsError:
        if not force:
            raise OutputError(f"{path} appeared while fastlic was coding (another process?) "
                              "and is left as it is; pass --force to overwrite") from None
    check_output(path, force=True)
    os.replace(tmp, path)


def write_atomic(path: str | Path, data: bytes, *, force: bool = False) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary file beside it (mode
    0o666 & ~umask, as open() gives), then moved in (:func:`_move_in`). OutputError for
    any reason it cannot or must not be written (:func:`check_output`)."""
    path = Path(path)
    check_output(path, force)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise _output_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~umask())
            f.write(data)
        _move_in(tmp, path, force)
    except OSError as exc:
        raise _output_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)   # after a link: the second name; after a rename: gone already


def image_format(path: str | Path) -> str:
    """The Pillow format an output's suffix picks (PNG for an unknown suffix);
    OutputError if Pillow cannot write it."""
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix, "PNG")
    if fmt not in Image.SAVE:
        raise OutputError(f"cannot write {path}: Pillow reads {suffix} files but cannot "
                          "write them; name the output .png")
    return fmt


def write_image(path: str | Path, image: np.ndarray, *, force: bool = False) -> None:
    """Write (H, W) or (H, W, 3) uint8 as PNG (or the format of the suffix), atomically
    (:func:`write_atomic`)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=image_format(path))
    write_atomic(path, buf.getvalue(), force=force)


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
