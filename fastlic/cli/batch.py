"""Inputs, outputs and batches: every check that can come before the work, and a batch
that goes on past a bad file (the rules: docs/cli.md)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import (FastlicError, ImageFormatError, OutOfMemoryError, OutputError,
                      UsageError)
from .options import OUT_OF_MEMORY


# ---- inputs and outputs -----------------------------------------------------------

def check_input(src: str, kind: str, pattern: str) -> None:
    """UsageError unless ``src`` is a file; for a directory, one that says which files
    in it to pass (``kind`` files, e.g. DIR/``pattern``). Directories are not walked."""
    path = Path(src)
    if path.is_dir():
        raise UsageError(f"{src} is a directory; pass the {kind} files in it, "
                         f"e.g. {path / pattern}")
    if not path.is_file():
        raise UsageError(f"input not found: {src}")


def same_file_key(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def check_collisions(inputs: list[str], outputs: list[Path]) -> None:
    """OutputError if two inputs would write one output, or an output is an input."""
    sources = {same_file_key(Path(src)): src for src in inputs}
    writers: dict[str, str] = {}
    for src, dst in zip(inputs, outputs):
        key = same_file_key(dst)
        if key in writers and same_file_key(Path(writers[key])) == same_file_key(Path(src)):
            raise OutputError(f"{src} is given twice; pass each input once")
        if key in writers:
            raise OutputError(f"{writers[key]} and {src} would both write {dst}; rename one, "
                              "or code them in separate runs with other --out-dir folders")
        if key in sources:
            raise OutputError(f"{src} would write over the input {sources[key]}; pick "
                              "another -o/--out-dir")
        writers[key] = src


def make_out_dir(out_dir: str) -> None:
    """--out-dir, created if missing; OutputError if it cannot be or is not writable."""
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"--out-dir {folder} is a file, not a folder; pick another") from None
    except OSError as exc:
        raise OutputError(f"cannot create --out-dir {folder}: {exc.strerror}; "
                          "pick another") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"--out-dir {folder} is not writable; pick another")


def outputs(inputs: list[str], output: str | None, out_dir: str | None,
             suffix: str) -> list[Path]:
    """Output path per input. Stops everything on conflicting options (UsageError) or
    outputs that collide (OutputError); creates --out-dir."""
    if output and len(inputs) > 1:
        raise UsageError("-o/--output takes one input; use --out-dir for several")
    if output and out_dir:
        raise UsageError("give -o/--output or --out-dir, not both")
    if output:
        paths = [Path(output)]
    else:
        paths = [(Path(out_dir) if out_dir else Path(i).parent) / (Path(i).stem + suffix)
                 for i in inputs]
    check_collisions(inputs, paths)
    if out_dir:
        make_out_dir(out_dir)
    return paths


def check_image_pixels(src: str, max_pixels: int, frame: int | None) -> None:
    """PixelLimitError if the image's header gives more than ``max_pixels``: PIL reads
    the size without decoding a pixel."""
    from PIL import Image

    from ..runtime.bitstream import check_pixels
    if Image.MAX_IMAGE_PIXELS is not None:   # Pillow must not refuse what the limit allows
        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS, max_pixels)
    try:
        with Image.open(src) as im:
            if frame:
                try:
                    im.seek(frame)
                except EOFError:
                    pass   # read_image names the frames there are
            width, height = im.size
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageFormatError(f"cannot read {src} as an image: {exc}") from exc
    check_pixels(width, height, max_pixels)


def read_flic(src: str, max_pixels: int | None) -> bytes:
    """A .flic file, its header (and pixel limit) checked before its payloads are read."""
    from ..runtime.bitstream import read_file
    try:
        return read_file(src, max_pixels)
    except OSError as exc:
        raise UsageError(f"cannot read {src}: {exc.strerror or exc}") from None


# ---- batches ------------------------------------------------------------------------

def say(line: str) -> None:
    """One line on stderr, above the progress bar if there is one."""
    from tqdm import tqdm
    tqdm.write(line, file=sys.stderr)


def progress(items, desc: str):
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="file", disable=len(items) < 2, file=sys.stderr)


def failed(src: str, exc: BaseException) -> int:
    """Report one file's failure; its exit code."""
    if isinstance(exc, MemoryError):
        exc = OutOfMemoryError(OUT_OF_MEMORY)
    say(f"fastlic: error: {src}: {exc}")
    return exc.exit_code


def run_batch(jobs: list, check, setup, run, desc: str | None = None) -> int:
    """``check(job)`` on every job (cheap: paths, headers), then ``tool = setup()`` (the
    model) if any passed, then ``run(job, tool)`` on those; a job is (input, output or
    None). ``desc``: the progress bar's label (None: no bar).

    One job: errors propagate (``main`` prints them). Several: each failure is one line,
    the others go on, and the result is the first failure's exit code."""
    if len(jobs) == 1:
        check(jobs[0])
        run(jobs[0], setup())
        return 0
    codes, ready = [], []
    for job in jobs:
        try:
            check(job)
            ready.append(job)
        except FastlicError as exc:
            codes.append(failed(job[0], exc))
    tool = setup() if ready else None
    for job in (progress(ready, desc) if desc else ready):
        try:
            run(job, tool)
        except (FastlicError, MemoryError) as exc:
            codes.append(failed(job[0], exc))
    if codes:
        say(f"fastlic: {len(codes)} of {len(jobs)} files failed")
    return codes[0] if codes else 0
