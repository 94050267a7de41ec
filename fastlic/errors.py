"""Typed errors. Each message is one line that says what went wrong and what to do.

The CLI prints ``fastlic: error: <message>`` and exits with ``exit_code``.
"""
from __future__ import annotations


class FastlicError(Exception):
    """Base class of every error fastlic raises on purpose."""

    exit_code = 1


class BitstreamError(FastlicError):
    """The .flic data is not a valid bitstream (base class)."""

    exit_code = 3


class BadMagicError(BitstreamError):
    """Not a .flic file at all."""


class UnsupportedVersionError(BitstreamError):
    """A format version this build cannot read."""


class TruncatedBitstreamError(BitstreamError):
    """The data ends before the header or a substream says it should."""


class TrailingDataError(BitstreamError):
    """Bytes after the last substream."""


class CorruptBitstreamError(BitstreamError):
    """A field is out of range, a checksum fails, or a payload does not decode."""


class ModelMismatchError(BitstreamError):
    """The bitstream was made with another model than the one loaded."""


class BackendMismatchError(BitstreamError):
    """The decoder derived other probability tables than the encoder used
    (different engine or hardware arithmetic); decoding would give a wrong image."""


class ReconstructionMismatchError(BackendMismatchError):
    """The decoded image differs from the encoder's reconstruction, whose CRC the
    bitstream holds (``compress --checksum``): the decoder's float arithmetic differs."""


class ImageFormatError(FastlicError):
    """An input image fastlic cannot code as it is (alpha, 16-bit, odd mode, unreadable)."""

    exit_code = 4


class ModelLoadError(FastlicError):
    """Weights missing, unreadable or not a fastlic model."""

    exit_code = 5


class EngineError(FastlicError):
    """An inference engine is unavailable or failed (missing package, no GPU, bad graph)."""

    exit_code = 6


class UsageError(FastlicError):
    """Bad command-line use: conflicting options, output exists, missing file."""

    exit_code = 2


class ExportError(FastlicError):
    """Exporting the model to ONNX failed, or an exported model directory is unusable."""

    exit_code = 7


class ExportMismatchError(ExportError):
    """Exported graphs disagree with PyTorch beyond tolerance (the message names every one)."""


class ManifestError(ExportError):
    """manifest.json is missing or malformed, or a graph file is missing or its hash differs."""
