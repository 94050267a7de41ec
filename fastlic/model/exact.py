"""The exact entropy path: h_s and both parameter networks in integer arithmetic.

Everything that decides which symbol a decoder reads — ẑ → hyper, the anchor
network, the context convolution, the non-anchor network, the means that feed the
context and the table indices — is computed here on integers, so every engine,
device, thread count and ``--dtype`` gets the same bits (docs/exact.md has the
argument in full). g_a (encoder only) and g_s stay float.

One exact layer is ``out = clamp(floor((v + 2^(s_c - 1)) / 2^s_c))`` with

* ``acc = Σ_chunks (cols_chunk @ W_chunk)``: integer activations (``|a| <= ACT_MAX``)
  times integer weights (``|w| <= WEIGHT_MAX``) in float32 GEMMs, the fan-in split
  (:func:`chunk_bounds`, from the weights alone) so that ``ACT_MAX · Σ|w|`` of every
  chunk and output is below 2^24: every partial sum, in any order, is then an integer
  below 2^24 and exact in float32 (and in TF32, whose inputs keep 11 significant
  bits, more than the 9 these need); the chunk results are added in float64;
* ``v = acc · m_c + b_c`` with ``m_c`` an integer multiplier in ``[2^16, 2^17)``, ``b_c``
  the bias in units of ``2^-s_c`` output steps and ``s_c`` a per-channel shift
  (LeakyReLU: negative ``v`` times 41/4096, floored), all below 2^53, so the
  requantisation is exact in float64 too.

Every value is an integer (or a power-of-two multiple of one) inside the range its
format holds exactly, so no operation ever rounds: summation order, blocking,
split-K, FMA contraction and TF32 cannot change a bit. Convolutions are im2col
(slices and a concat) plus GEMM, never Winograd or FFT, whose transforms are not
integer.

Tensor formats at the stage boundaries (float32, NCHW, like every stage):

=============  =========================================================
``z_hat``      integers; clamped to ±ACT_MAX (real ẑ lie within ±64)
``hyper``      integers in ±ACT_MAX (steps ``scales['hyper']``)
``index``      probability-table index, 0..NUM_SCALES-1, zero at the other pass
``mean``       μ = k · 2^-MEAN_FRAC, |k| <= MEAN_MAX, zero at the other pass
``y_hat_*``    ŷ = symbol + μ; rounded to 2^-MEAN_FRAC and clamped to ±Y_HAT_MAX
=============  =========================================================

:class:`ExactEntropy` holds only integer tensors (its state dict is what ships under
``exact.``); :func:`from_float` builds one from a FastLIC and the activation steps
of its quantisation-aware training (:mod:`fastlic.model.quant`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .distributions import SCALE_MIN

ACT_MAX = 255                 # |every exact layer's input| (9 bits with sign)
WEIGHT_MAX = 127              # |every integer weight| (int8)
F32_EXACT = 1 << 24           # float32 holds every integer below this
MULT_BITS = 17                # requantisation multipliers lie in [2^16, 2^17)
MAX_SHIFT = 52                # so that v + 2^(s-1) stays below 2^53
BIAS_MAX = 1 << 46            # |integer bias|, in units of 2^-s output steps
MEAN_FRAC = 6                 # μ and ŷ in units of 2^-6
MEAN_MAX = 1 << 15            # |μ| <= 512
RAW_FRAC = 6                  # the scale branch's pre-softplus value, units of 2^-6
RAW_LO, RAW_HI = -16 << RAW_FRAC, 64 << RAW_FRAC   # softplus(-16) ~ 1e-7, softplus(64) = 64
Y_HAT_MAX = 1 << 16           # |ŷ| fed to the context
LEAKY_NUM, LEAKY_SHIFT = 41, 12   # LeakyReLU slope 41/4096 = 0.0100098 (training uses it too)
LEAKY_SLOPE = LEAKY_NUM / 2 ** LEAKY_SHIFT
ACC_MAX = 1 << 27             # |acc| <= ACT_MAX · Σ|w| of a column, checked on load
# QAT activation steps, in this order in ``FastLIC.qat.scales`` (fastlic.model.quant)
ACT_POINTS = ("hs1", "hs2", "hyper", "a1", "a2", "ctx_in", "n1", "n2")
ANCHOR_PHASES = ((0, 0), (1, 1))
NONANCHOR_PHASES = ((0, 1), (1, 0))
TAPS_3X3 = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def context_taps(ry: int, rx: int) -> tuple[tuple[int, int, int, int, int], ...]:
    """The live context taps of non-anchor phase (ry, rx): (anchor phase i, da, db, dy, dx).

    A non-anchor at (2a + ry, 2b + rx) reads anchor phase ANCHOR_PHASES[i] at
    (a + da, b + db), which is 5x5 tap (dy, dx) = (2 da + sy - ry, 2 db + sx - rx);
    12 per phase, the taps the checkerboard mask keeps.
    """
    taps = []
    for i, (sy, sx) in enumerate(ANCHOR_PHASES):
        for da in (-1, 0, 1):
            for db in (-1, 0, 1):
                dy, dx = 2 * da + sy - ry, 2 * db + sx - rx
                if abs(dy) <= 2 and abs(dx) <= 2:
                    taps.append((i, da, db, dy, dx))
    return tuple(taps)


# ---- the integer primitives (torch ops only: they export to plain ONNX) -----------
def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (B, H+2, W+2, C) zero-padded by 1 -> the (B, H, W, C) window at offset (dy, dx)."""
    h, w = x.shape[1] - 2, x.shape[2] - 2
    return x[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w, :]


def _pad1(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 0, 1, 1, 1, 1))


def chunk_bounds(weight: torch.Tensor) -> tuple[int, ...]:
    """Split points of the fan-in (rows of an integer weight (K, N)) into contiguous
    chunks whose GEMM is exact in float32 for every input with |a| <= ACT_MAX: for each
    output column j, ACT_MAX · Σ_{i in chunk} |w_ij| < 2^24 bounds every partial sum of
    that chunk, in any order. Greedy from the first row; (0, ..., K)."""
    w = np.abs(weight.detach().cpu().numpy().astype(np.int64))
    limit = (F32_EXACT - 1) // ACT_MAX
    bounds, total = [0], np.zeros(w.shape[1], dtype=np.int64)
    for i in range(w.shape[0]):
        total += w[i]
        if total.max() > limit:
            bounds.append(i)
            total = w[i].copy()
    bounds.append(w.shape[0])
    return tuple(bounds)


def _accumulate(cols: torch.Tensor, weight: torch.Tensor, bounds: tuple[int, ...]) -> torch.Tensor:
    """Integer GEMM: cols (..., K) float32 ints @ weight (K, N) float32 ints -> float64,
    exact: one float32 GEMM per chunk of ``bounds`` (:func:`chunk_bounds`), the chunk
    results summed in float64. (float64 weights: the reference, one float64 GEMM.)"""
    if weight.dtype == torch.float64:
        return torch.matmul(cols.double(), weight)
    if len(bounds) == 2:
        return torch.matmul(cols, weight).double()
    acc = None
    for start, stop in zip(bounds[:-1], bounds[1:]):
        part = torch.matmul(cols[..., start:stop], weight[start:stop]).double()
        acc = part if acc is None else acc + part
    return acc


def _requantise(acc: torch.Tensor, mult: torch.Tensor, bias: torch.Tensor, half: torch.Tensor,
                inv: torch.Tensor, low: float, high: float, leaky: bool) -> torch.Tensor:
    """clamp(floor((v + 2^(s-1)) · 2^-s)) with v = acc · m + b (LeakyReLU: v < 0 scaled by
    LEAKY_NUM / 2^LEAKY_SHIFT, floored): float64 integers in and out, every step exact."""
    v = acc * mult + bias
    if leaky:   # max(v, floor(v · k)) is v for v >= 0 and floor(v · k) for v < 0 (k < 1)
        v = torch.maximum(v, torch.floor(v * float(LEAKY_NUM) * 2.0 ** -LEAKY_SHIFT))
    return torch.clamp(torch.floor((v + half) * inv), low, high)


def _round_clamp(x: torch.Tensor, step_pow: int, bound: float) -> torch.Tensor:
    """float32 input -> float64 integers round(x · 2^step_pow), clamped to ±bound."""
    return torch.clamp(torch.round(x.double() * float(2 ** step_pow)), -bound, bound)


class ExactEntropy(nn.Module):
    """h_s, anchor and non-anchor stages of one model, on integers (module docstring).

    Built by :func:`from_float`, or empty for ``load_state_dict`` (shipped files).
    Buffers are integer tensors; float copies for the GEMMs are made per device on
    first use and kept, so ``.half()`` or ``.to(dtype)`` on a parent module cannot
    change the arithmetic.
    """

    def __init__(self, latent_channels: int, hyper_channels: int, num_scales: int):
        super().__init__()
        m, nh = latent_channels, hyper_channels
        self.m, self.nh = m, nh
        shapes = {  # layer: (fan-in, outputs)
            "hs1": (9 * nh, 4 * nh), "hs2": (9 * nh, 4 * (3 * m // 2)),
            "hs3": (9 * (3 * m // 2), 2 * m),
            "a1": (2 * m, 2 * m), "a2": (2 * m, 2 * m), "a3": (2 * m, 2 * m),
            "c01": (12 * m, 2 * m), "c10": (12 * m, 2 * m),
            "n1": (4 * m, 3 * m), "n2": (3 * m, 3 * m), "n3": (3 * m, 2 * m)}
        self.shapes = shapes
        for name, (fan, out) in shapes.items():
            self.register_buffer(f"{name}_w", torch.zeros(fan, out, dtype=torch.int8))
            self.register_buffer(f"{name}_b", torch.zeros(out, dtype=torch.int64))
            self.register_buffer(f"{name}_m", torch.full((out,), 1 << (MULT_BITS - 1),
                                                         dtype=torch.int32))
            self.register_buffer(f"{name}_s", torch.full((out,), 16, dtype=torch.int32))
        self.register_buffer("ctx_in_m", torch.tensor([1 << (MULT_BITS - 1)], dtype=torch.int32))
        self.register_buffer("ctx_in_s", torch.tensor([16], dtype=torch.int32))
        self.register_buffer("scale_lut", torch.zeros(RAW_HI - RAW_LO + 1, dtype=torch.uint8))
        self.num_scales = num_scales
        #: float64 runs every GEMM in float64 (a reference for tests; slower, same bits)
        self.gemm_dtype = torch.float32
        self.refresh()

    # integer buffers must stay integers whatever a parent module's .half()/.to() asks
    def _apply(self, fn, recurse=True):
        dtypes = {k: b.dtype for k, b in self._buffers.items()}
        super()._apply(fn, recurse)
        for k, dtype in dtypes.items():
            if self._buffers[k].dtype != dtype:
                self._buffers[k] = self._buffers[k].to(dtype)
        self._cache = {}
        return self

    def _load_from_state_dict(self, *args, **kwargs):
        result = super()._load_from_state_dict(*args, **kwargs)
        self.refresh()
        return result

    def refresh(self) -> None:
        """Recompute what derives from the integer tensors (after filling them)."""
        self._cache = {}
        self.bounds = {name: chunk_bounds(getattr(self, f"{name}_w")) for name in self.shapes}

    def _layer(self, name: str, device: torch.device) -> tuple:
        key = (name, device, self.gemm_dtype)
        if key in self._cache:
            return self._cache[key]
        shift = getattr(self, f"{name}_s").to(torch.float64)
        layer = (getattr(self, f"{name}_w").to(device, self.gemm_dtype), self.bounds[name],
                 getattr(self, f"{name}_b").to(device, torch.float64),
                 getattr(self, f"{name}_m").to(device, torch.float64),
                 torch.exp2(shift - 1).to(device), torch.exp2(-shift).to(device))
        if not (torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()):
            self._cache[key] = layer   # traced tensors must not outlive the trace
        return layer

    def _dense(self, name: str, cols: torch.Tensor, leaky: bool, low: float = -ACT_MAX,
               high: float = ACT_MAX) -> torch.Tensor:
        """One exact layer on im2col'd float32 integer columns -> float64 integers."""
        w, bounds, b, mult, half, inv = self._layer(name, cols.device)
        return _requantise(_accumulate(cols, w, bounds), mult, b, half, inv, low, high, leaky)

    def _conv3x3(self, name: str, x: torch.Tensor, leaky: bool) -> torch.Tensor:
        """x (B, H, W, C) float32 integers -> (B, H, W, N) float64 integers, 3x3 'same'."""
        padded = _pad1(x)
        cols = torch.cat([_shifted(padded, dy, dx) for dy, dx in TAPS_3X3], dim=-1)
        return self._dense(name, cols, leaky)

    def _deconv(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Stride-2 5x5 transposed conv as a 3x3 conv to the four output phases, then
        depth-to-space: (B, H, W, C) -> (B, 2H, 2W, N) float32 integers, LeakyReLU."""
        out = self._conv3x3(name, x, leaky=True).float()
        b, h, w, c4 = out.shape
        out = out.reshape(b, h, w, 2, 2, c4 // 4).permute(0, 1, 3, 2, 4, 5)
        return out.reshape(b, 2 * h, 2 * w, c4 // 4)

    # ---- the three stages -------------------------------------------------------
    def hyper_synthesis(self, z_hat: torch.Tensor) -> torch.Tensor:
        """ẑ (B, Nh, h/4, w/4) -> hyper (B, 2M, h, w): float32 integers in ±ACT_MAX."""
        x = _round_clamp(z_hat, 0, ACT_MAX).float().permute(0, 2, 3, 1)
        x = self._deconv("hs1", x)
        x = self._deconv("hs2", x)
        hyper = self._conv3x3("hs3", x, leaky=False).float()
        return hyper.permute(0, 3, 1, 2).contiguous()

    def _params(self, prefix: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The 1x1 parameter network ``prefix`` on rows x (..., C) -> (index, mean) (..., M)."""
        h = self._dense(f"{prefix}1", x, leaky=True).float()
        h = self._dense(f"{prefix}2", h, leaky=True).float()
        w, bounds, b, mult, half, inv = self._layer(f"{prefix}3", h.device)
        acc = _accumulate(h, w, bounds)
        m = self.m
        raw = _requantise(acc[..., :m], mult[:m], b[:m], half[:m], inv[:m], RAW_LO, RAW_HI, False)
        mean = _requantise(acc[..., m:], mult[m:], b[m:], half[m:], inv[m:], -MEAN_MAX, MEAN_MAX,
                           False)
        lut = self.scale_lut.to(h.device).to(torch.float32)
        index = lut[(raw - RAW_LO).long()]
        return index, (mean * 2.0 ** -MEAN_FRAC).float()

    @staticmethod
    def _scatter(phase_out: dict, shape) -> torch.Tensor:
        """{(ry, rx): (B, h/2, w/2, C)} for two phases -> (B, C, h, w), zeros elsewhere."""
        zero = torch.zeros(shape, dtype=torch.float32, device=next(iter(phase_out.values())).device)
        rows = [torch.stack([phase_out.get((ry, rx), zero) for rx in (0, 1)], dim=3)
                for ry in (0, 1)]
        full = torch.stack(rows, dim=2)          # (B, h/2, 2, w/2, 2, C)
        b, h2, _, w2, _, c = full.shape
        return full.reshape(b, 2 * h2, 2 * w2, c).permute(0, 3, 1, 2).contiguous()

    def anchor_params(self, hyper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hyper (B, 2M, h, w) -> (index, mean) (B, M, h, w) at anchors, zeros elsewhere."""
        x = _round_clamp(hyper, 0, ACT_MAX).float().permute(0, 2, 3, 1)
        idx, mean = {}, {}
        for ry, rx in ANCHOR_PHASES:
            idx[ry, rx], mean[ry, rx] = self._params("a", x[:, ry::2, rx::2, :])
        shape = idx[ANCHOR_PHASES[0]].shape
        return self._scatter(idx, shape), self._scatter(mean, shape)

    def context(self, y_hat_anchor: torch.Tensor) -> dict:
        """ŷ with non-anchors zeroed (B, M, h, w) -> {non-anchor phase: (B, h/2, w/2, 2M)}
        float32 integers in ±ACT_MAX, in hyper's steps."""
        mult = self.ctx_in_m.to(y_hat_anchor.device, torch.float64)
        shift = self.ctx_in_s.to(y_hat_anchor.device, torch.float64)
        q = _round_clamp(y_hat_anchor, MEAN_FRAC, Y_HAT_MAX << MEAN_FRAC)
        q = _requantise(q, mult, torch.zeros_like(mult), torch.exp2(shift - 1), torch.exp2(-shift),
                        -ACT_MAX, ACT_MAX, False).float().permute(0, 2, 3, 1)
        anchors = [_pad1(q[:, sy::2, sx::2, :]) for sy, sx in ANCHOR_PHASES]
        out = {}
        for name, (ry, rx) in zip(("c01", "c10"), NONANCHOR_PHASES):
            cols = torch.cat([_shifted(anchors[i], da, db)
                              for i, da, db, _, _ in context_taps(ry, rx)], dim=-1)
            out[ry, rx] = self._dense(name, cols, leaky=False).float()
        return out

    def nonanchor_params(self, hyper: torch.Tensor, y_hat_anchor: torch.Tensor):
        """hyper and ŷ (non-anchors zeroed) -> (index, mean) at non-anchors, zeros elsewhere."""
        x = _round_clamp(hyper, 0, ACT_MAX).float().permute(0, 2, 3, 1)
        ctx = self.context(y_hat_anchor)
        idx, mean = {}, {}
        for ry, rx in NONANCHOR_PHASES:
            rows = torch.cat((x[:, ry::2, rx::2, :], ctx[ry, rx]), dim=-1)
            idx[ry, rx], mean[ry, rx] = self._params("n", rows)
        shape = idx[NONANCHOR_PHASES[0]].shape
        return self._scatter(idx, shape), self._scatter(mean, shape)

    def check(self) -> str | None:
        """Why these tensors break the exactness bounds (a damaged file), or None."""
        for name in self.shapes:
            w = getattr(self, f"{name}_w").to(torch.int64)   # int8's abs(-128) wraps
            if w.abs().max() > WEIGHT_MAX:
                return f"exact layer {name} has a weight beyond ±{WEIGHT_MAX}"
            if ACT_MAX * int(w.abs().sum(dim=0).max()) >= ACC_MAX:
                return f"exact layer {name} can accumulate beyond 2^27"
            if getattr(self, f"{name}_b").abs().max() >= BIAS_MAX:
                return f"exact layer {name} has a bias beyond ±2^46"
            mult = getattr(self, f"{name}_m")
            if mult.min() < 0 or mult.max() >= 1 << MULT_BITS:
                return f"exact layer {name} has a multiplier outside 0..2^{MULT_BITS}"
            shift = getattr(self, f"{name}_s")
            if shift.min() < 1 or shift.max() > MAX_SHIFT:
                return f"exact layer {name} has a shift outside 1..{MAX_SHIFT}"
        if int(self.scale_lut.max()) >= self.num_scales:
            return f"the scale lookup table indexes beyond the {self.num_scales} tables"
        return None


# ---- conversion from a float model ---------------------------------------------------
def _multiplier(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real positive factors -> (m, s) with m / 2^s ≈ real, m in [2^16, 2^17)."""
    real = np.maximum(np.asarray(real, dtype=np.float64), 1e-30)
    shift = (MULT_BITS - 1) - np.floor(np.log2(real)).astype(np.int64)
    mult = np.round(real * np.exp2(shift)).astype(np.int64)
    over = mult >= 1 << MULT_BITS          # rounding up to 2^17
    mult[over] >>= 1
    shift[over] -= 1
    if shift.min() < 1 or shift.max() > MAX_SHIFT:
        raise ValueError("a requantisation factor is out of range; calibrate the "
                         "activation steps again")
    return mult, shift


def weight_steps(weight: torch.Tensor, out_dim: int) -> torch.Tensor:
    """Per-output-channel weight step max|w| / WEIGHT_MAX (1 for an all-zero channel)."""
    dims = [d for d in range(weight.dim()) if d != out_dim]
    top = weight.detach().abs().amax(dim=dims)
    return torch.where(top > 0, top / WEIGHT_MAX, torch.ones_like(top))


class _Builder:
    """Fills one ExactEntropy layer from float weights and activation steps."""

    def __init__(self, exact: ExactEntropy):
        self.exact = exact

    def dense(self, name: str, matrix: torch.Tensor, w_step: torch.Tensor, bias: torch.Tensor,
              s_in: float, s_out: torch.Tensor | float, leaky: bool) -> None:
        """matrix (fan-in, out) float, w_step (out,), bias (out,); s_out scalar or (out,)."""
        fan, out = self.exact.shapes[name]
        if tuple(matrix.shape) != (fan, out):
            raise ValueError(f"layer {name}: matrix {tuple(matrix.shape)}, expected {(fan, out)}")
        w_step = w_step.double()
        w_int = torch.clamp(torch.round(matrix.double() / w_step), -WEIGHT_MAX, WEIGHT_MAX)
        s_out = torch.as_tensor(s_out, dtype=torch.float64).expand(out)
        mult, shift = _multiplier((s_in * w_step / s_out).numpy())
        # the bias in the requantiser's units, 2^-s output steps: as fine as the output
        b_int = torch.round(bias.double() / s_out * torch.from_numpy(np.exp2(shift)))
        if b_int.abs().max() >= BIAS_MAX:
            raise ValueError(f"layer {name}: a bias does not fit the requantiser; "
                             "calibrate the activation steps again")
        e = self.exact
        getattr(e, f"{name}_w").copy_(w_int.to(torch.int8))
        getattr(e, f"{name}_b").copy_(b_int.to(torch.int64))
        getattr(e, f"{name}_m").copy_(torch.from_numpy(mult).to(torch.int32))
        getattr(e, f"{name}_s").copy_(torch.from_numpy(shift).to(torch.int32))


def conv3x3_matrix(weight: torch.Tensor) -> torch.Tensor:
    """Conv2d weight (N, C, 3, 3) -> (9C, N) in TAPS_3X3 order, channels inner."""
    n, c = weight.shape[:2]
    return weight.permute(2, 3, 1, 0).reshape(9 * c, n)


def deconv_matrix(weight: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d weight (C, N, 5, 5) (stride 2, padding 2, output padding 1) ->
    (9C, 4N): the 3x3 conv whose outputs are the phases (a, b) of each output channel,
    ordered (a, b, n). Output (2i + a, 2j + b) reads input (i + di, j + dj) through tap
    (a + 2 - 2 di, b + 2 - 2 dj) of the 5x5 kernel."""
    c, n = weight.shape[:2]
    out = weight.new_zeros(3, 3, c, 2, 2, n)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            for a in (0, 1):
                for b in (0, 1):
                    ky, kx = a + 2 - 2 * di, b + 2 - 2 * dj
                    if 0 <= ky <= 4 and 0 <= kx <= 4:
                        out[di + 1, dj + 1, :, a, b, :] = weight[:, :, ky, kx]
    return out.reshape(9 * c, 4 * n)


def context_matrix(weight: torch.Tensor, ry: int, rx: int) -> torch.Tensor:
    """Masked 5x5 context weight (N, M, 5, 5) -> (12M, N) for non-anchor phase (ry, rx)."""
    return torch.cat([weight[:, :, dy + 2, dx + 2].t() for _, _, _, dy, dx in context_taps(ry, rx)])


def scale_lut(scale_index) -> torch.Tensor:
    """uint8 (RAW_HI - RAW_LO + 1,): table index of max(softplus(k · 2^-RAW_FRAC), SCALE_MIN)."""

    raw = torch.arange(RAW_LO, RAW_HI + 1, dtype=torch.float64) * 2.0 ** -RAW_FRAC
    sigma = torch.clamp(F.softplus(raw), min=SCALE_MIN).float().numpy()
    return torch.from_numpy(np.asarray(scale_index(sigma), dtype=np.uint8))


def from_float(model, scales: dict[str, float], scale_index, num_scales: int) -> ExactEntropy:
    """The ExactEntropy of FastLIC ``model`` with activation steps ``scales`` (ACT_POINTS;
    ẑ has step 1, the outputs 2^-RAW_FRAC and 2^-MEAN_FRAC). ``scale_index`` maps float32
    σ to table indices (``EntropyTables.scale_index``)."""
    cfg = model.cfg
    if cfg.shared_params:
        raise ValueError("the exact entropy path needs separate anchor and non-anchor "
                         "networks (shared_params=False)")
    m = cfg.latent_channels
    exact = ExactEntropy(m, cfg.hyper_channels, num_scales)
    put = _Builder(exact).dense
    s = {k: float(v) for k, v in scales.items()}
    out_steps = torch.cat([torch.full((m,), 2.0 ** -RAW_FRAC), torch.full((m,), 2.0 ** -MEAN_FRAC)])
    with torch.no_grad():
        d1, d2, c3 = model.h_s[0], model.h_s[2], model.h_s[4]
        for name, layer, s_in, s_out in (("hs1", d1, 1.0, s["hs1"]), ("hs2", d2, s["hs1"], s["hs2"])):
            step = weight_steps(layer.weight, 1)
            put(name, deconv_matrix(layer.weight.float()), step.repeat(4), layer.bias.repeat(4),
                s_in, s_out, leaky=True)
        put("hs3", conv3x3_matrix(c3.weight.float()), weight_steps(c3.weight, 0), c3.bias,
            s["hs2"], s["hyper"], leaky=False)
        for prefix, net, s_in in (("a", model.anchor_net, s["hyper"]),
                                  ("n", model.nonanchor_net, s["hyper"])):
            convs = [net[0], net[2], net[4]]
            ins = (s_in, s[f"{prefix}1"], s[f"{prefix}2"])
            outs = (s[f"{prefix}1"], s[f"{prefix}2"], out_steps)
            for k, (conv, si, so) in enumerate(zip(convs, ins, outs), start=1):
                put(f"{prefix}{k}", conv.weight[:, :, 0, 0].t().float(), weight_steps(conv.weight, 0),
                    conv.bias, si, so, leaky=k < 3)
        ctx = model.context
        weight = (ctx.weight * ctx.kernel_mask).float()
        step = weight_steps(weight, 0)
        for name, (ry, rx) in zip(("c01", "c10"), NONANCHOR_PHASES):
            put(name, context_matrix(weight, ry, rx), step, ctx.bias, s["ctx_in"], s["hyper"],
                leaky=False)
        mult, shift = _multiplier(np.array([2.0 ** -MEAN_FRAC / s["ctx_in"]]))
        exact.ctx_in_m.copy_(torch.from_numpy(mult).to(torch.int32))
        exact.ctx_in_s.copy_(torch.from_numpy(shift).to(torch.int32))
        exact.scale_lut.copy_(scale_lut(scale_index))
    exact.refresh()
    problem = exact.check()
    if problem:
        raise ValueError(problem)
    return exact

