"""The fastlic command's outputs and batches (issue 16): every output problem is a typed
one-line error, found before the work where it can be; nothing but a regular file is
ever replaced; a batch goes on past a bad file; missing extras name their pip extra."""
import importlib.metadata
import os
import stat
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import fastlic.cli.options
from fastlic.cli import main
from fastlic.errors import (ImageFormatError, MissingExtraError, OutOfMemoryError,
                            OutputError, PixelLimitError, UsageError)
from fastlic.runtime import image as image_module


@pytest.fixture()
def no_work(monkeypatch):
    """Fails the test if a model is loaded: the error had to come before any work."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the error")
    monkeypatch.setattr(fastlic.cli.options, "load_codec", refuse)


def _one_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("fastlic: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def _leftovers(folder) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# ---- where an output may go --------------------------------------------------------

def test_output_into_a_missing_folder_is_refused_before_any_work(png, tmp_path, capsys,
                                                                 no_work):
    out = tmp_path / "missing" / "photo.flic"
    assert main(["compress", str(png), "-o", str(out)]) == OutputError.exit_code
    _one_error(capsys, "does not exist")
    assert not out.parent.exists()


def test_a_directory_as_output_is_refused_even_with_force(png, tmp_path, capsys, no_work):
    target = tmp_path / "folder.flic"
    target.mkdir()
    assert main(["compress", str(png), "-o", str(target), "--force"]) == OutputError.exit_code
    _one_error(capsys, "is a directory", "--out-dir")
    assert target.is_dir() and not list(target.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_before_any_work(png, tmp_path, capsys, no_work):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert main(["compress", str(png), "-o", str(folder / "x.flic")]) == OutputError.exit_code
        _one_error(capsys, "not writable")
        assert not list(folder.iterdir())
    finally:
        folder.chmod(0o755)


def test_a_write_failure_after_the_work_is_still_typed(weights, png, tmp_path, capsys,
                                                       monkeypatch):
    import errno

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "link", full)
    out = tmp_path / "photo.flic"
    assert main(["compress", str(png), "-o", str(out), "--model", weights]) == \
        OutputError.exit_code
    _one_error(capsys, "no space left")
    assert not out.exists() and not _leftovers(tmp_path)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_outputs_honour_the_umask(weights, png, tmp_path, mask):
    before = os.umask(mask)
    try:
        flic, back = tmp_path / "photo.flic", tmp_path / "back.png"
        assert main(["compress", str(png), "-o", str(flic), "--model", weights]) == 0
        assert main(["decompress", str(flic), "-o", str(back), "--model", weights]) == 0
    finally:
        os.umask(before)
    for path in (flic, back):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_a_fifo_or_symlink_is_never_replaced_even_with_force(png, tmp_path, capsys, no_work):
    fifo = tmp_path / "pipe.flic"
    os.mkfifo(fifo)
    kept = tmp_path / "kept.flic"
    kept.write_bytes(b"keep me")
    link = tmp_path / "link.flic"
    link.symlink_to(kept)
    for target, kind in ((fifo, "a FIFO"), (link, "a symbolic link")):
        assert main(["compress", str(png), "-o", str(target), "--force"]) == \
            OutputError.exit_code
        _one_error(capsys, kind, "never replaces")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    assert kept.read_bytes() == b"keep me"


def test_a_device_is_never_replaced_even_with_force():
    with pytest.raises(OutputError, match="is a device"):
        image_module.check_output("/dev/null", force=True)
    with pytest.raises(OutputError, match="is a device"):
        image_module.write_atomic("/dev/null", b"x", force=True)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_colliding_outputs_are_refused_before_any_output_is_written(photo, tmp_path, capsys,
                                                                    no_work):
    a, b = tmp_path / "a" / "photo.png", tmp_path / "b" / "photo.png"
    for path in (a, b):
        path.parent.mkdir()
        Image.fromarray(photo).save(path)
    out = tmp_path / "out"
    assert main(["compress", str(a), str(b), "--out-dir", str(out)]) == OutputError.exit_code
    _one_error(capsys, str(a), str(b), "would both write")
    assert not out.exists()
    jpeg = tmp_path / "a" / "photo.jpg"      # beside their inputs: a/photo.flic twice
    Image.fromarray(photo).save(jpeg)
    assert main(["compress", str(a), str(jpeg)]) == OutputError.exit_code
    _one_error(capsys, "would both write")
    assert main(["compress", str(a), str(tmp_path / "a" / "." / "photo.png")]) == \
        OutputError.exit_code
    _one_error(capsys, "is given twice")
    assert not list((tmp_path / "a").glob("*.flic"))


# ---- an output that appears while coding ---------------------------------------------

def test_an_output_that_appears_while_coding_is_not_overwritten(weights, png, tmp_path,
                                                                capsys, monkeypatch):
    """Another process writes the output after the early check: refused at the rename."""
    from fastlic.runtime.codec import Codec
    out = tmp_path / "photo.flic"
    original = Codec.compress

    def compress_while_another_writes(self, *args, **kwargs):
        data = original(self, *args, **kwargs)
        out.write_bytes(b"the other process's file")
        return data
    monkeypatch.setattr(Codec, "compress", compress_while_another_writes)
    assert main(["compress", str(png), "-o", str(out), "--model", weights]) == \
        OutputError.exit_code
    _one_error(capsys, "--force")
    assert out.read_bytes() == b"the other process's file" and not _leftovers(tmp_path)
    out.unlink()
    assert main(["compress", str(png), "-o", str(out), "--model", weights, "--force"]) == 0
    assert out.read_bytes().startswith(b"FLIC")


def test_the_rename_refuses_a_file_that_appears_after_every_check(tmp_path, monkeypatch):
    """The last moment: the destination appears between write_atomic's check and the
    rename; the hard link refuses it (with --force: replaced, a regular file)."""
    out = tmp_path / "x.flic"
    claim = image_module._claim

    def other_writer_first(tmp, path):
        path.write_bytes(b"other")
        return claim(tmp, path)
    monkeypatch.setattr(image_module, "_claim", other_writer_first)
    with pytest.raises(OutputError, match="appeared while fastlic was coding"):
        image_module.write_atomic(out, b"mine")
    assert out.read_bytes() == b"other" and not _leftovers(tmp_path)
    image_module.write_atomic(out, b"mine", force=True)
    assert out.read_bytes() == b"mine" and not _leftovers(tmp_path)


def test_without_hard_links_the_name_is_still_claimed_exclusively(tmp_path, monkeypatch):
    """File systems without hard links (FAT, some network mounts): an O_EXCL placeholder."""
    import errno

    def no_links(*args):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "x.flic"
    image_module.write_atomic(out, b"first")
    with pytest.raises(OutputError, match="appeared while"):
        image_module._move_in(str(tmp_path / "unused"), out, force=False)
    assert out.read_bytes() == b"first" and not _leftovers(tmp_path)


def test_writers_racing_for_one_output_without_force_one_wins(tmp_path):
    out = tmp_path / "x.flic"
    start, results = threading.Barrier(4), {}

    def write(i):
        start.wait()
        try:
            image_module.write_atomic(out, f"writer {i}".encode())
            results[i] = "won"
        except OutputError:
            results[i] = "refused"
    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == "won"]
    assert len(results) == 4 and len(winners) == 1
    assert out.read_bytes() == f"writer {winners[0]}".encode() and not _leftovers(tmp_path)


# ---- inputs and batches --------------------------------------------------------------

def test_a_batch_goes_on_past_bad_files_and_exits_with_the_first_failure(weights, photo,
                                                                          tmp_path, capsys):
    good = [tmp_path / f"good{i}.png" for i in range(3)]
    for path in good:
        Image.fromarray(photo).save(path)
    alpha = tmp_path / "alpha.png"        # fails while coding (transparent)
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(alpha)
    junk = tmp_path / "junk.png"          # fails the early checks (not an image)
    junk.write_bytes(b"not an image")
    inputs = [good[0], alpha, good[1], junk, good[2]]
    out = tmp_path / "out"
    code = main(["compress", *map(str, inputs), "--out-dir", str(out), "--model", weights])
    err = capsys.readouterr().err
    assert code == ImageFormatError.exit_code
    assert f"fastlic: error: {junk}: cannot read" in err
    assert f"fastlic: error: {alpha}: image has a transparent alpha" in err
    assert err.rstrip().endswith("fastlic: 2 of 5 files failed") and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["good0.flic", "good1.flic", "good2.flic"]
    bad = out / "bad.flic"
    bad.write_bytes(b"FLIC garbage")
    flics = [out / "good0.flic", bad, out / "good1.flic", tmp_path / "none.flic"]
    code = main(["decompress", *map(str, flics), "--out-dir", str(tmp_path / "png"),
                 "--model", weights])
    err = capsys.readouterr().err
    assert code == UsageError.exit_code      # the first failure: none.flic, found up front
    assert f"fastlic: error: {bad}:" in err and "2 of 4 files failed" in err
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["good0.png", "good1.png"]


def test_a_directory_input_names_the_files_to_pass(tmp_path, capsys, no_work):
    folder = tmp_path / "photos"
    folder.mkdir()
    assert main(["compress", str(folder)]) == UsageError.exit_code
    _one_error(capsys, f"{folder} is a directory; pass the image files in it, "
                       f"e.g. {folder}/*.png")
    assert main(["info", str(folder)]) == UsageError.exit_code
    _one_error(capsys, f"e.g. {folder}/*.flic")


def test_a_non_flic_file_names_fastlic_compress(png, capsys):
    assert main(["info", str(png)]) == 3
    err = _one_error(capsys, "fastlic compress")
    assert "fastlic encode" not in err


def test_the_pixel_limit_is_checked_from_the_headers(weights, png, tmp_path, capsys,
                                                     monkeypatch):
    flic = tmp_path / "photo.flic"
    assert main(["compress", str(png), "-o", str(flic), "--model", weights]) == 0
    capsys.readouterr()
    monkeypatch.setattr(fastlic.cli.options, "load_codec", lambda *a, **k: pytest.fail("loaded"))
    assert main(["compress", str(png), "-o", str(tmp_path / "x.flic"),
                 "--max-pixels", "1000"]) == PixelLimitError.exit_code
    _one_error(capsys, "150x120", "--max-pixels")
    assert main(["decompress", str(flic), "-o", str(tmp_path / "y.png"),
                 "--max-pixels", "1000"]) == PixelLimitError.exit_code
    _one_error(capsys, "pixel limit")
    assert main(["compress", str(png), "--max-pixels", "0"]) == UsageError.exit_code
    assert not (tmp_path / "x.flic").exists() and not (tmp_path / "y.png").exists()


def test_frame_picks_one_frame_of_a_multi_frame_file(weights, photo, tmp_path, capsys):
    gif = tmp_path / "two.gif"
    frames = [Image.fromarray(photo), Image.fromarray(255 - photo)]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert main(["compress", str(gif), "--model", weights]) == ImageFormatError.exit_code
    _one_error(capsys, "--frame")
    assert main(["compress", str(gif), "--frame", "1", "--model", weights]) == 0
    assert gif.with_suffix(".flic").is_file()


def test_an_allocation_failure_is_a_typed_error(png, tmp_path, capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError
    monkeypatch.setattr(fastlic.cli.options, "load_codec", no_memory)
    assert main(["compress", str(png), "-o", str(tmp_path / "x.flic")]) == \
        OutOfMemoryError.exit_code
    _one_error(capsys, "out of memory")


# ---- the version and the extras ------------------------------------------------------

@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag, capsys):
    assert main([flag]) == 0
    assert capsys.readouterr().out == f"fastlic {importlib.metadata.version('fastlic')}\n"


def test_python_dash_m_runs_the_command():
    import subprocess
    out = subprocess.run([sys.executable, "-m", "fastlic.cli", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("fastlic ")


def test_profile_plot_without_matplotlib_fails_before_profiling(png, tmp_path, capsys,
                                                                monkeypatch, no_work):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib now fails
    chart = tmp_path / "chart.png"
    assert main(["profile", str(png), "--plot", str(chart)]) == MissingExtraError.exit_code
    _one_error(capsys, "matplotlib", 'pip install "fastlic[eval]"')
    assert not chart.exists()


def test_the_onnxruntime_backend_without_onnxruntime_names_the_extra(png, tmp_path, capsys,
                                                                     monkeypatch, no_work):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.delitem(sys.modules, "fastlic.engines.onnxruntime.engine", raising=False)
    out = tmp_path / "x.flic"
    assert main(["compress", str(png), "-o", str(out), "--backend", "onnxruntime"]) == \
        MissingExtraError.exit_code
    _one_error(capsys, "onnxruntime", 'pip install "fastlic[export]"')
    assert not out.exists()
    from fastlic.engines import load_engines
    with pytest.raises(MissingExtraError, match=r"fastlic\[export\]"):
        load_engines("onnxruntime", tmp_path)


def test_export_without_onnx_names_the_extra_and_writes_nothing(weights, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "new" / "export"
    assert main(["export", "--out", str(out), "--model", weights]) == \
        MissingExtraError.exit_code
    _one_error(capsys, "onnx", 'pip install "fastlic[export]"')
    assert not (tmp_path / "new").exists()


def test_a_failed_export_leaves_no_partial_directory(weights, tmp_path, capsys, monkeypatch):
    import fastlic.export as export
    from fastlic.errors import ExportError

    def fail_half_way(model, out, plan, opset, log):
        (out / plan[0][1]).write_bytes(b"half a graph")
        raise ExportError("exporting stage g_a failed: simulated")
    monkeypatch.setattr(export, "_export_all", fail_half_way)
    out = tmp_path / "new" / "export"
    assert main(["export", "--out", str(out), "--model", weights, "--no-check"]) == \
        ExportError.exit_code
    assert "simulated" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    assert main(["export", "--out", str(existing), "--model", weights, "--no-check"]) == \
        ExportError.exit_code
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_a_staged_export_lands_in_a_new_or_existing_folder(tmp_path):
    from fastlic.export import _staged
    for out in (tmp_path / "a" / "new", tmp_path / "existing"):
        if out.name == "existing":
            out.mkdir()
            (out / "manifest.json").write_text("old")
            (out / "notes.txt").write_text("mine")
        with _staged(out) as tmp:
            (tmp / "g_a.onnx").write_bytes(b"graph")
            (tmp / "manifest.json").write_text("new")
        assert (out / "g_a.onnx").read_bytes() == b"graph"
        assert (out / "manifest.json").read_text() == "new"
        assert not [p for p in out.parent.iterdir() if p.name.endswith(".part")]
    assert (tmp_path / "existing" / "notes.txt").read_text() == "mine"
    assert stat.S_IMODE((tmp_path / "a" / "new").stat().st_mode) == 0o777 & ~image_module.umask()
