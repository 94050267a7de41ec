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
    """Bad command-line use: conflicting options, a missing input, a directory as input."""

    exit_code = 2


class ExportError(FastlicError):
    """Exporting the model to ONNX failed, or an exported model directory is unusable."""

    exit_code = 7


class ExportMismatchError(ExportError):
    """Exported graphs disagree with PyTorch beyond tolerance (the message names every one)."""


class ManifestError(ExportError):
    """manifest.json is missing or malformed, or a graph file is missing or its hash differs."""


class OutputError(FastlicError):
    """An output path fastlic cannot or must not write: missing or read-only folder, a
    directory or device in the way, an existing file without --force, two inputs
    that would write one output."""

    exit_code = 8


class ResourceLimitError(FastlicError):
    """The work would exceed a limit: the pixel limit, or the memory the machine has."""

    exit_code = 9


class PixelLimitError(ResourceLimitError):
    """An image or a file's header is larger than the configured pixel limit."""


class OutOfMemoryError(ResourceLimitError):
    """An allocation failed while coding (the image is too large for this machine)."""


class MissingExtraError(FastlicError):
    """An optional dependency is not installed; the message names the pip extra."""

    exit_code = 10
