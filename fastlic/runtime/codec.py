"""Encode and decode pipelines: six stage engines plus constriction range coding.

Encoder::

    image ─pad─▶ g_a ─▶ y ─▶ h_a ─▶ z ─round─▶ ẑ ──────────────────────▶ [z substream]
                                            │
                                            ▼
                          h_s ─▶ hyper ─▶ anchor ─▶ (σa, μa)
                                      │      sa = round(y − μa) at anchors ─▶ [y_anchor]
                                      │      ŷa = (sa + μa) · anchor_mask
                                      └────▶ nonanchor(hyper, ŷa) ─▶ (σn, μn)
                                             sn = round(y − μn) at non-anchors ─▶ [y_nonanchor]

Decoder: the same graph from ẑ on, decoding each substream where the encoder
coded it: two whole-tensor passes, then g_s(ŷ) cropped to the image size.

Channels whose symbols are all zero in both passes are not coded (the header's
channel mask). h_s and the parameter networks are the exact stages
(:mod:`fastlic.model.exact`): they return each symbol's probability-table index and
mean in integer arithmetic, the same bits on every engine, device, thread count and
dtype, so every decoder reads the same symbols and ŷ. The CRC32 of the indices, per
pass, is in the header: a mismatch means a damaged file or a broken engine
(``BackendMismatchError``), never float noise.

g_s stays float, so its image can differ between engines by a level in a few
pixels. By default the encoder also runs g_s and stores the CRC32 of its own output
image; ``decompress`` returns the decoder's image either way (a file decodes
everywhere), ``decompress(..., strict=True)`` raises ``ReconstructionMismatchError``
if it differs and :meth:`Codec.matches_encoder` tells whether it does.
``compress(..., checksum=False)`` skips that g_s run (faster encoding, no CRC).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from ..engines import load_engines
from ..entropy.coder import SymbolCoder
from ..entropy.tables import EntropyTables, build_tables
from ..errors import CorruptBitstreamError, OutOfMemoryError, UsageError
from ..modelfile import (DEFAULT_QUALITY, WEIGHTS_DIR, ModelInfo, exact_model, load_network,
                         read_shipped, shipped_weights)
from ..timing import StageTimer, activate, maybe_stage
from .bitstream import (DEFAULT_MAX_PIXELS, Bitstream, ColorLayout, Header, check_model,
                        check_pixels, check_reconstruction, check_table_indices, pack,
                        peek_header, reconstruction_crc, table_index_crc, unpack)
from .image import from_codable, model_input, padded, to_codable
from .sources import GRAPH_BACKENDS, cached_export, module_engines, shipped_from_dir
from .sources import engine_options as engine_options_for
from .tiling import run_tiled, windows

DEFAULT_WEIGHTS = WEIGHTS_DIR / f"q{DEFAULT_QUALITY}.safetensors"   # the default rung

# Tiles (fastlic.runtime.tiling): a core of DEFAULT_TILE pixels a side; each stage's halo
# covers its receptive field, in its input's units: g_a pixels, h_s ẑ positions,
# the others latent positions (1/16 of a pixel side).
DEFAULT_TILE = 768
HALO = {"g_a": 64, "h_s": 2, "anchor": 0, "nonanchor": 2, "g_s": 2}
UNIT = {"g_a": 1, "h_s": 64, "anchor": 16, "nonanchor": 16, "g_s": 16}   # pixels per unit
SCALE = {"g_a": 1 / 16, "h_s": 4, "anchor": 1, "nonanchor": 1, "g_s": 16}  # output / input


def _to_uint8_hwc(chw: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] (any strides: onnxruntime's NCHW or torch's NHWC
    output) -> C-contiguous (H, W, 3) uint8, rounded half to even and clipped.

    The first pass writes the transposed values into a contiguous buffer and the
    rest work in place, so the result needs no further copy (the reconstruction
    CRC and callers get contiguous memory)."""
    rgb = np.empty((chw.shape[1], chw.shape[2], 3), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):   # hostile latents: refused below
        np.multiply(chw.transpose(1, 2, 0), np.float32(255.0), out=rgb)
        finite = np.isfinite(rgb.min() + rgb.max())        # NaN or inf anywhere
    if not finite:
        raise CorruptBitstreamError(
            "the decoded image has non-finite values: the file's latents are far outside "
            "anything this model's encoder writes; the file is damaged or hostile, re-encode")
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0, 255, out=rgb)
    return rgb.astype(np.uint8)


def _checkerboard(h: int, w: int) -> np.ndarray:
    """(h, w) bool, True at anchors ((i + j) even)."""
    return (np.add.outer(np.arange(h), np.arange(w)) % 2) == 0


def _anchor_input(sym: np.ndarray, mean_a: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """ŷ with non-anchors zeroed: the input of the non-anchor pass (1, M, h, w) float32.
    (float32 sym + μ is exact for |ŷ| < 2^17, μ being a multiple of 2^-6, and IEEE-rounded
    the same way everywhere beyond; the exact stage clamps it.)"""
    return np.where(anchor, sym + mean_a, 0).astype(np.float32)


def _pass_elements(mask: np.ndarray, positions: np.ndarray, grid: int) -> np.ndarray:
    """Flat indices into an (M, h, w) array of the coded channels (mask, (M,) bool) at
    one pass's positions (flat indices into (h, w), ascending; ``grid`` = h * w).

    Taking an array's elements at them gives that pass's coding order: channel by
    channel, positions in raster order, for encoder and decoder alike. (Index arrays,
    not a boolean (M, h, w) mask: numpy takes and puts by index several times faster.)
    """
    return (np.flatnonzero(mask)[:, None] * grid + positions[None, :]).ravel()


def _table_indices(index: np.ndarray, coded: np.ndarray) -> np.ndarray:
    """The exact stage's indices (1, M, h, w) float32 at the flat elements ``coded`` -> uint8."""
    return index[0].take(coded).astype(np.uint8)


def _z_table_index(channels: int, per_channel: int) -> np.ndarray:
    """Table of each ẑ symbol in coding order: its channel, (channels * per_channel,) int32."""
    return np.repeat(np.arange(channels, dtype=np.int32), per_channel)


def _full_latent(y_hat_anchor: np.ndarray, sym: np.ndarray, mean_n: np.ndarray,
                 anchor: np.ndarray) -> np.ndarray:
    """Anchors from pass 1, non-anchors ``sym + mean`` from pass 2: ŷ (1, M, h, w) float32."""
    return np.where(anchor, y_hat_anchor, sym + mean_n).astype(np.float32)


@contextlib.contextmanager
def _typed_memory_errors(stage: str):
    """An allocation failure inside a stage -> OutOfMemoryError (one line, exit 9).
    torch raises RuntimeError ("can't allocate memory", CUDA "out of memory")."""
    try:
        yield
    except MemoryError:
        raise OutOfMemoryError(f"out of memory in {stage}; lower the tile size (tile=) or "
                               "the pixel limit, or use a machine with more memory") from None
    except RuntimeError as exc:
        text = str(exc)
        if "allocate" not in text and "out of memory" not in text:
            raise
        raise OutOfMemoryError(f"out of memory in {stage} ({text.splitlines()[0][:120]}); lower "
                               "the tile size (tile=) or the pixel limit, or use a machine "
                               "with more memory") from None


@dataclasses.dataclass
class _Latent:
    """Per-image latent geometry: padded size, latent grid, anchor mask."""

    height: int
    width: int

    def __post_init__(self):
        self.pad_h, self.pad_w = padded(self.height), padded(self.width)
        self.anchor = _checkerboard(self.pad_h // 16, self.pad_w // 16)
        self.anchor_positions = np.flatnonzero(self.anchor)       # raster order
        self.nonanchor_positions = np.flatnonzero(~self.anchor)
        self.z_shape = (self.pad_h // 64, self.pad_w // 64)


class Codec:
    """A loaded model ready to compress and decompress; safe to share between threads.

    Load once and reuse: ``Codec.load(weights, backend=..., device=...)`` builds the
    engines; ``compress`` and ``decompress`` keep no per-call state on the object.
    """

    def __init__(self, info: ModelInfo, engines: dict, tables: EntropyTables,
                 backend: str = "torch", device: str = "cpu", *, tile: int = DEFAULT_TILE,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        if tile < 64 or tile % 64:
            raise UsageError(f"tile must be a multiple of 64 pixels, got {tile}")
        if max_pixels < 1:
            raise UsageError(f"max_pixels must be at least 1, got {max_pixels}")
        self.tile, self.max_pixels = tile, max_pixels
        self.info = info
        self.engines = engines
        self.tables = tables
        self.backend = backend
        self.device = device
        self.z_coder = SymbolCoder(tables.z)
        self.anchor_coder = SymbolCoder(tables.y[info.anchor_family])
        self.nonanchor_coder = SymbolCoder(tables.y[info.nonanchor_family])

    # ---- construction -----------------------------------------------------------
    @classmethod
    def from_model(cls, model, name: str | None = None, quality: int = 0, tables=None,
                   weights_hash: bytes | None = None, backend: str = "torch",
                   device: str = "cpu", *, tile: int = DEFAULT_TILE,
                   max_pixels: int = DEFAULT_MAX_PIXELS, **engine_options):
        """Wrap an in-memory FastLIC (tests, training); tables are built if not given,
        and the exact stages converted (:func:`fastlic.model.quant.with_exact`) if the
        model has none. The weights hash covers the float weights only."""
        if weights_hash is None:
            h = hashlib.sha256()
            for k, v in sorted(model.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().numpy().tobytes())
            weights_hash = h.digest()[:8]
        cfg = model.cfg
        info = ModelInfo(name or f"fastlic-{cfg.name}", weights_hash, quality, cfg.latent_channels,
                         cfg.anchor_family, cfg.nonanchor_family)
        options = engine_options_for(backend, device, engine_options)
        tables = tables or build_tables(model)
        model = exact_model(model, tables)   # a float model (tests, training): converted
        return cls(info, module_engines(backend, model, **options), tables, backend, device,
                   tile=tile, max_pixels=max_pixels)

    @classmethod
    def load(cls, weights: str | Path | None = None, backend: str = "torch", device: str = "cpu",
             *, quality: int | None = None, model_dir: str | Path | None = None,
             cache_dir: str | Path | None = None, log=None, tile: int = DEFAULT_TILE,
             max_pixels: int = DEFAULT_MAX_PIXELS, **engine_options):
        """Load a shipped model for ``backend`` ("torch", "onnxruntime", "tensorrt") on ``device``.

        weights: .safetensors (default: the package's model of ``quality``, or the copy
            in ``model_dir``).
        quality: a rate point of the shipped ladder (``models.shipped_ladder()``; default
            3); only without ``weights``.
        model_dir: a ``fastlic export`` directory; onnxruntime and tensorrt run its graphs.
            Without it, they export ``weights`` once into ``cache_dir`` (default
            ~/.cache/fastlic) and reuse that; ``log`` gets the progress lines.
        tile: side in pixels (a multiple of 64) of the tiles that larger images are coded
            in, which bounds memory (fastlic.runtime.tiling).
        max_pixels: the largest image compress and decompress accept (PixelLimitError,
            checked from the header before any allocation).
        engine_options: torch: dtype ("float32"/"float16"/"bfloat16"), cuda_graphs, threads,
            subpixel, packed, channels_last; onnxruntime: providers, threads, verify, spinning, layout
            (see also ``engines.onnxruntime.engine.share_thread_pool``); tensorrt: precision,
            deform, min_size, opt_size, max_size, max_batch, verify (engines cached under
            ``cache_dir`` too).
        Identity and tables come from the weights file either way, so bitstreams are
        interchangeable between backends.
        """
        options = engine_options_for(backend, device, engine_options)
        if quality is not None and (weights or model_dir):
            raise UsageError("quality picks a shipped model; do not combine it with weights "
                             "or model_dir")
        weights = Path(weights) if weights else None
        if weights is None and quality is not None:
            weights = shipped_weights(quality)
        if backend in GRAPH_BACKENDS:
            directory = Path(model_dir) if model_dir else cached_export(
                weights or DEFAULT_WEIGHTS, cache_dir, log)
            shipped = shipped_from_dir(directory, weights, options.pop("verify", True))
            if backend == "tensorrt":   # its engine cache and build progress
                options.update(cache_dir=cache_dir, log=log)
            else:   # the blocked graphs' cache
                options.update(cache_dir=cache_dir)
            engines = load_engines(backend, directory, verify=False, **options)
        else:
            path = weights or DEFAULT_WEIGHTS
            if model_dir:   # its weights copy; ``weights``, if given, must be its source
                path = shipped_from_dir(Path(model_dir), weights).path
            shipped = read_shipped(path)
            engines = load_engines(backend, load_network(path), **options)
        return cls(shipped.info, engines, shipped.tables, backend, device, tile=tile,
                   max_pixels=max_pixels)

    def synchronize(self) -> None:
        """Wait for work queued on the device (CUDA); for timers. A no-op on the CPU."""
        sync = getattr(self.engines.get("g_s"), "synchronize", None)
        if sync is not None:
            sync()

    # ---- stages -----------------------------------------------------------------
    def _run(self, stage: str, timer, **inputs) -> dict[str, np.ndarray]:
        """One stage on its whole input, or in tiles when that is larger than one."""
        with maybe_stage(timer, stage), _typed_memory_errors(stage):
            engine = self.engines[stage]
            if stage in ("g_a", "h_a"):   # g_a is tiled by _analyse; h_a is small
                return engine.run(inputs)
            tile, halo = self.tile // UNIT[stage], HALO[stage]
            height, width = next(iter(inputs.values())).shape[-2:]
            if height <= tile and width <= tile:
                return engine.run(inputs)
            with activate(None):    # one timing for the whole stage, not one per tile
                return run_tiled(engine.run, inputs, SCALE[stage], tile, halo)

    def _hyper(self, z_hat: np.ndarray, timer) -> np.ndarray:
        return self._run("h_s", timer, z_hat=z_hat)["hyper"]

    def _params(self, stage: str, timer, **inputs) -> tuple[np.ndarray, np.ndarray]:
        """(table index, mean) of one pass, each (1, M, h, w) float32."""
        out = self._run(stage, timer, **inputs)
        return out["index"], out["mean"]

    # ---- encoder ----------------------------------------------------------------
    def compress(self, image: np.ndarray, drop_alpha: bool = False, timer: StageTimer | None = None,
                 return_reconstruction: bool = False, checksum: bool = True):
        """uint8 image (H, W[, 3|4]) -> .flic bytes (and the decoder's exact output if asked).

        checksum: run g_s on the encoder's ŷ and store the CRC32 of that output image
        in the header; a decoder whose image differs (other backend or device float
        arithmetic) then raises ReconstructionMismatchError instead of returning it.
        False saves that g_s run (the decoder's largest stage) and the 4 bytes.
        """
        with activate(timer):
            rgb, layout = to_codable(image, drop_alpha)
            check_pixels(rgb.shape[1], rgb.shape[0], self.max_pixels)
            geo = _Latent(rgb.shape[0], rgb.shape[1])
            y, z_hat = self._analyse(rgb, timer)
            hyper = self._hyper(z_hat, timer)
            q = self._quantise(y, hyper, geo, timer)
            recon = recon_crc = None
            if checksum or return_reconstruction:
                recon = self._reconstruct(q, geo, layout, timer)
            if checksum:
                with maybe_stage(timer, "reconstruction_crc"):
                    recon_crc = reconstruction_crc(recon)
            data = self._code(z_hat, q, geo, layout, recon_crc, timer)
            return (data, recon) if return_reconstruction else data

    def _reconstruct(self, q: "_Quantised", geo: _Latent, layout, timer) -> np.ndarray:
        """The decoder's output for these symbols, computed by this codec's own g_s."""
        with maybe_stage(timer, "dequantize"):
            y_hat = _full_latent(q.y_hat_anchor, q.sym, q.mean_n, geo.anchor)
        return self._synthesize(y_hat, geo, layout, timer)

    def _analyse(self, rgb: np.ndarray, timer) -> tuple[np.ndarray, np.ndarray]:
        """Padded image -> (y (1, M, h, w), ẑ (1, Nh, h/4, w/4)) float32."""
        tiles = windows(padded(rgb.shape[0]), padded(rgb.shape[1]), self.tile, HALO["g_a"])
        if len(tiles) == 1:
            with maybe_stage(timer, "pad"):
                x = model_input(rgb)
            y = self._run("g_a", timer, image=x)["y"]
        else:
            y = self._analyse_tiled(rgb, tiles, timer)
        z = self._run("h_a", timer, y=y)["z"]
        with maybe_stage(timer, "quantize_z"):
            return y, np.round(z).astype(np.float32)

    def _analyse_tiled(self, rgb: np.ndarray, tiles, timer) -> np.ndarray:
        """g_a tile by tile: each window of the edge-padded image (only the tiles at its
        bottom and right edges need padding) -> its core of y."""
        y = None
        with maybe_stage(timer, "g_a"), activate(None), _typed_memory_errors("g_a"):
            for win in tiles:
                rows, cols = win.outer
                x = model_input(rgb[rows.start:rows.stop, cols.start:cols.stop])
                part = np.asarray(self.engines["g_a"].run({"image": x})["y"])
                if y is None:
                    y = np.empty((*part.shape[:2], padded(rgb.shape[0]) // 16,
                                  padded(rgb.shape[1]) // 16), part.dtype)
                y[(..., *win.target(SCALE["g_a"]))] = part[(..., *win.inner(SCALE["g_a"]))]
        return y

    def _quantise(self, y: np.ndarray, hyper: np.ndarray, geo: _Latent, timer) -> "_Quantised":
        """The two checkerboard passes of the encoder: symbols and entropy parameters."""
        index_a, mean_a = self._params("anchor", timer, hyper=hyper)
        with maybe_stage(timer, "quantize_anchor"):
            sym_a = self._symbols(y - mean_a)
            y_hat_anchor = _anchor_input(sym_a, mean_a, geo.anchor)
        index_n, mean_n = self._params("nonanchor", timer, hyper=hyper, y_hat_anchor=y_hat_anchor)
        with maybe_stage(timer, "quantize_nonanchor"):
            sym = np.where(geo.anchor, sym_a, self._symbols(y - mean_n))
            mask = sym[0].reshape(sym.shape[1], -1).any(axis=1)
        return _Quantised(sym, mask, index_a, index_n, mean_n, y_hat_anchor)

    @staticmethod
    def _symbols(residual: np.ndarray) -> np.ndarray:
        """The encoder's quantiser: y - μ -> integer symbols (float32), rounded to nearest.

        Only the encoder calls it; ``experiments/deadzone.py`` measures rounding offsets
        against it (each costs rate-distortion).
        """
        return np.round(residual)

    def _code(self, z_hat, q: "_Quantised", geo: _Latent, layout, recon_crc, timer) -> bytes:
        """Entropy-code ẑ and both passes, then pack the bitstream."""
        sym = q.sym[0].astype(np.int32)                                        # (M, h, w)
        with maybe_stage(timer, "entropy_encode_z"):
            sub_z = self._encode_z(z_hat)
        with maybe_stage(timer, "entropy_encode_anchor"):
            sub_a, crc_a = self._encode_pass(self.anchor_coder, sym, q.index_a, q.mask,
                                             geo.anchor_positions)
        with maybe_stage(timer, "entropy_encode_nonanchor"):
            sub_n, crc_n = self._encode_pass(self.nonanchor_coder, sym, q.index_n, q.mask,
                                             geo.nonanchor_positions)
        with maybe_stage(timer, "pack"):
            header = Header(self.info.name, self.info.weights_hash, self.info.quality, geo.height,
                            geo.width, layout, tuple(bool(b) for b in q.mask), (crc_a, crc_n),
                            recon_crc)
            return pack(Bitstream(header, (sub_z, sub_a, sub_n)))

    def _encode_z(self, z_hat: np.ndarray):
        idx = _z_table_index(z_hat.shape[1], z_hat[0, 0].size)
        return self.z_coder.encode(z_hat[0].astype(np.int32).ravel(), idx)

    def _encode_pass(self, coder, sym, index, mask, positions):
        """Code the symbols of the coded channels at ``positions``; returns (bytes, index CRC)."""
        coded = _pass_elements(mask, positions, index[0, 0].size)
        idx = _table_indices(index, coded)
        return coder.encode(sym.take(coded), idx), table_index_crc(idx)

    # ---- decoder ----------------------------------------------------------------
    def read_header(self, data: bytes) -> Bitstream:
        h = peek_header(data)
        check_pixels(h.width, h.height, self.max_pixels)
        check_model(h, self.info.name, self.info.weights_hash)
        if len(h.channel_mask) != self.info.latent_channels:
            raise CorruptBitstreamError(f"channel mask has {len(h.channel_mask)} channels, "
                                        f"the model has {self.info.latent_channels}")
        return unpack(data)

    def coded_symbols(self, data: bytes) -> int:
        """How many symbols decoding ``data`` entropy-decodes: all of z, and y's in the
        channels the header's mask codes."""
        h = self.read_header(data).header
        geo = _Latent(h.height, h.width)
        z = self.tables.z.pmfs.shape[0] * geo.z_shape[0] * geo.z_shape[1]
        return z + sum(h.channel_mask) * geo.anchor.size

    def decompress(self, data: bytes, timer: StageTimer | None = None,
                   strict: bool = False) -> np.ndarray:
        """.flic bytes -> uint8 (H, W, 3), or (H, W) for greyscale images.

        The symbols and ŷ are the encoder's on every engine (the exact stages); the
        image is this codec's g_s of them, which another engine, device or dtype may
        round differently by a level in a few pixels. ``strict``: raise
        ReconstructionMismatchError unless the image is the encoder's own, bit for bit
        (needs the header's reconstruction CRC, the default of ``compress``).
        """
        with activate(timer):
            with maybe_stage(timer, "parse"):
                bs = self.read_header(data)
            h = bs.header
            geo = _Latent(h.height, h.width)
            y_hat = self._decode_latent(bs, geo, timer)
            image = self._synthesize(y_hat, geo, h.color, timer)
            if strict:
                with maybe_stage(timer, "check_reconstruction"):
                    check_reconstruction(h, image)
            return image

    @staticmethod
    def matches_encoder(data: bytes, image: np.ndarray) -> bool | None:
        """Whether ``image`` (a decode of ``data``) is the encoder's reconstruction bit for
        bit: True, False, or None when the file holds no reconstruction CRC."""
        h = unpack(data).header
        return None if h.recon_crc is None else reconstruction_crc(image) == h.recon_crc

    def decode_latent(self, data: bytes) -> np.ndarray:
        """.flic bytes -> ŷ (1, M, h, w) float32, the input of g_s (for analysis and tests)."""
        bs = self.read_header(data)
        return self._decode_latent(bs, _Latent(bs.header.height, bs.header.width), None)

    def _decode_latent(self, bs: Bitstream, geo: _Latent, timer) -> np.ndarray:
        h = bs.header
        mask = np.array(h.channel_mask, dtype=bool)
        z_hat = self._decode_z(bs.substreams[0], geo, timer)
        hyper = self._hyper(z_hat, timer)
        sym = np.zeros((1, self.info.latent_channels, *geo.anchor.shape), dtype=np.float32)
        index_a, mean_a = self._params("anchor", timer, hyper=hyper)
        self._decode_pass(self.anchor_coder, bs.substreams[1], h, sym, index_a,
                          mask, geo.anchor_positions, "anchor", timer)
        with maybe_stage(timer, "dequantize_anchor"):
            y_hat_anchor = _anchor_input(sym, mean_a, geo.anchor)
        index_n, mean_n = self._params("nonanchor", timer, hyper=hyper, y_hat_anchor=y_hat_anchor)
        self._decode_pass(self.nonanchor_coder, bs.substreams[2], h, sym, index_n,
                          mask, geo.nonanchor_positions, "nonanchor", timer)
        with maybe_stage(timer, "dequantize"):
            return _full_latent(y_hat_anchor, sym, mean_n, geo.anchor)

    def _decode_z(self, data: bytes, geo: _Latent, timer) -> np.ndarray:
        zc = self.tables.z.pmfs.shape[0]
        with maybe_stage(timer, "entropy_decode_z"):
            idx = _z_table_index(zc, geo.z_shape[0] * geo.z_shape[1])
            z_hat = self.z_coder.decode(data, idx)
            return z_hat.reshape(1, zc, *geo.z_shape).astype(np.float32)

    def _decode_pass(self, coder, data, header, sym, index, mask, positions, name, timer):
        """Decode one checkerboard pass into ``sym`` (1, M, h, w) in place."""
        with maybe_stage(timer, f"table_index_{name}"):
            coded = _pass_elements(mask, positions, index[0, 0].size)
            idx = _table_indices(index, coded)
            check_table_indices(header, name, idx)
        with maybe_stage(timer, f"entropy_decode_{name}"):
            sym[0].reshape(-1)[coded] = coder.decode(data, idx)  # a view; faster than put

    def _synthesize(self, y_hat, geo: _Latent, layout, timer) -> np.ndarray:
        tile = self.tile // UNIT["g_s"]
        tiles = windows(*y_hat.shape[-2:], tile, HALO["g_s"])
        if len(tiles) == 1:
            x_hat = self._run("g_s", timer, y_hat=y_hat)["image_hat"]
            with maybe_stage(timer, "crop"):
                rgb = _to_uint8_hwc(x_hat[0, :, :geo.height, :geo.width])
        else:
            rgb = self._synthesize_tiled(y_hat, tiles, geo, timer)
        return from_codable(rgb, ColorLayout(layout))

    def _synthesize_tiled(self, y_hat, tiles, geo: _Latent, timer) -> np.ndarray:
        """g_s tile by tile, each core cropped to the image and rounded to uint8 at once,
        so no float image of the whole size is ever held."""
        rgb = np.empty((geo.height, geo.width, 3), np.uint8)
        with maybe_stage(timer, "g_s"), activate(None), _typed_memory_errors("g_s"):
            for win in tiles:
                part = self.engines["g_s"].run({"y_hat": np.ascontiguousarray(
                    y_hat[(..., *win.outer)])})["image_hat"]
                (r0, r1), (c0, c1) = ((s.start, min(s.stop, n)) for s, n in zip(
                    win.target(SCALE["g_s"]), (geo.height, geo.width)))
                if r0 >= r1 or c0 >= c1:    # a tile wholly in the stride padding
                    continue
                ir, ic = win.inner(SCALE["g_s"])
                rgb[r0:r1, c0:c1] = _to_uint8_hwc(
                    part[0, :, ir.start:ir.start + r1 - r0, ic.start:ic.start + c1 - c0])
        return rgb


@dataclasses.dataclass(frozen=True)
class _Quantised:
    """The encoder's symbols and parameters, all (1, M, h, w) float32 (mask: (M,) bool)."""

    sym: np.ndarray            # anchors from pass 1, non-anchors from pass 2 (integers)
    mask: np.ndarray           # channels with a non-zero symbol: the coded ones
    index_a: np.ndarray        # table indices (integers) at anchors
    index_n: np.ndarray        # ... at non-anchors
    mean_n: np.ndarray
    y_hat_anchor: np.ndarray   # ŷ at anchors, 0 elsewhere: the input of pass 2
