"""Profiling and benchmarking: stage timers, ``fastlic profile`` and ``fastlic bench``."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from PIL import Image

from fastlic.cli import main
from fastlic.timing import StageTimer, activate, sub_stage

ENCODE = {"pad", "g_a", "h_a", "quantize_z", "h_s", "anchor", "quantize_anchor", "nonanchor",
          "quantize_nonanchor", "entropy_encode_z", "entropy_encode_anchor",
          "entropy_encode_nonanchor", "pack"}
DECODE = {"parse", "entropy_decode_z", "h_s", "anchor", "table_index_anchor",
          "entropy_decode_anchor", "dequantize_anchor", "nonanchor", "table_index_nonanchor",
          "entropy_decode_nonanchor", "dequantize", "g_s", "crop"}
CHECKSUM_ENCODE = {"dequantize", "g_s", "crop", "reconstruction_crc"}   # the default
CHECKSUM_DECODE: set[str] = set()   # only strict decoding checks the reconstruction


@pytest.fixture()
def png(tmp_path, photo):
    path = tmp_path / "photo.png"
    Image.fromarray(photo[:64, :96]).save(path)
    return path


def test_sub_stages_go_to_the_active_timer_of_this_thread_only():
    timer, other = StageTimer(), StageTimer()
    with sub_stage("nowhere"):
        pass
    seen = []

    def elsewhere():
        with activate(other), sub_stage("x.h2d"):
            seen.append(True)

    with activate(timer):
        with sub_stage("g_a.h2d"):
            thread = threading.Thread(target=elsewhere)
            thread.start()
            thread.join()
    with sub_stage("after"):
        pass
    assert list(timer.times) == ["g_a.h2d"] and list(other.times) == ["x.h2d"] and seen
    assert timer.medians_ms(drop_first=1)["g_a.h2d"] >= 0   # one run: nothing left to drop


def test_engine_copies_are_timed_as_sub_stages(tiny_exact):
    """On CUDA an engine times its copies; force the flag to check the plumbing on CPU."""
    from fastlic.engines import load_engines
    engine = load_engines("torch", tiny_exact)["g_s"]
    engine.copies = True
    timer = StageTimer()
    with activate(timer):
        engine.run({"y_hat": np.zeros((1, 16, 2, 2), np.float32)})
    assert set(timer.times) == {"g_s.h2d", "g_s.d2h"}


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_profile_prints_table_and_writes_json_and_png(backend, shipped_tiny, png, tmp_path,
                                                      capsys, request):
    extra = []
    if backend == "onnxruntime":
        export_dir = request.getfixturevalue("tiny_export")
        extra = ["--model-dir", str(export_dir), "--threads", "1"]
    out_json, out_png = tmp_path / "p.json", tmp_path / "p.png"
    assert main(["profile", str(png), "--model", str(shipped_tiny), "--backend", backend,
                 "--repeat", "2", "--json", str(out_json), "--plot", str(out_png), *extra]) == 0
    table = capsys.readouterr().out
    assert "encode stage" in table and "decode stage" in table and "entropy_decode_anchor" in table
    report = json.loads(out_json.read_text())
    assert report["backend"] == backend and report["repeat"] == 2 and report["bytes"] > 0
    assert list(report["engines"]) == ["g_a", "h_a", "h_s", "anchor", "nonanchor", "g_s"]
    g_s = report["engines"]["g_s"]   # what ran the stage, also in the table's header
    assert f"  g_s        {g_s}" in table
    assert g_s.startswith({"torch": "torch TorchEngine on cpu, torch.float32, channels_last",
                           "onnxruntime": "onnxruntime g_s_col2im.onnx on CPUExecutionProvider, "
                                          "blocked ("}[backend])
    for name, expected in (("encode", ENCODE | CHECKSUM_ENCODE),
                           ("decode", DECODE | CHECKSUM_DECODE)):
        stages = report[name]["stages"]
        assert set(stages) == expected
        assert all(s["median_ms"] > 0 and 0 < s["share"] < 1 for s in stages.values())
        assert report[name]["total_ms"] >= sum(s["median_ms"] for s in stages.values()) * 0.9
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_codec_drops_the_warm_up_run(tiny_codec, photo):
    from fastlic.perf.profile import profile_codec
    result = profile_codec(tiny_codec, photo[:32, :32], repeat=3, name="crop")
    assert result.encode.total_ms > 0 and result.decode.stages["g_s"] > 0
    fast = profile_codec(tiny_codec, photo[:32, :32], repeat=1, checksum=False)
    assert set(fast.encode.stages) == ENCODE and set(fast.decode.stages) == DECODE
    assert fast.bytes == result.bytes - 4                 # no reconstruction CRC
    with pytest.raises(ValueError, match="repeat"):
        profile_codec(tiny_codec, photo, repeat=0)


def test_bench_reports_percentiles_and_throughput(shipped_tiny, photo, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(photo[:40, :50]).save(folder / "a.png")
    Image.fromarray(photo[:, :, 0][:33, :20]).save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "bench.json"
    assert main(["bench", str(folder), "--model", str(shipped_tiny), "--repeat", "3",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "p50 ms" in printed and "encode" in printed and "decode" in printed
    summary = json.loads(out.read_text())
    assert summary["images"] == 2 and summary["checksum"] is True
    fast = tmp_path / "fast.json"
    assert main(["bench", str(folder), "--model", str(shipped_tiny), "--no-checksum",
                 "--json", str(fast)]) == 0
    assert json.loads(fast.read_text())["mean_bpp"] < summary["mean_bpp"]   # 4 bytes less
    assert summary["dtype"] == "float32"
    bf16 = tmp_path / "bf16.json"
    capsys.readouterr()
    assert main(["bench", str(folder), "--model", str(shipped_tiny), "--dtype", "bfloat16",
                 "--repeat", "1", "--json", str(bf16)]) == 0
    assert "on cpu (bfloat16)" in capsys.readouterr().out
    assert json.loads(bf16.read_text())["dtype"] == "bfloat16"
    for name in ("encode", "decode"):
        s = summary[name]
        assert s["calls"] == 6 and 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"]
        assert s["images_per_s"] > 0 and s["megapixels_per_s"] > 0


def test_bench_and_profile_usage_errors(shipped_tiny, tmp_path, png, capsys):
    assert main(["bench", str(tmp_path / "none"), "--model", str(shipped_tiny)]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["bench", str(tmp_path / "empty"), "--model", str(shipped_tiny)]) == 2
    assert main(["profile", str(tmp_path / "none.png"), "--model", str(shipped_tiny)]) == 2
    assert main(["profile", str(png), "--model", str(shipped_tiny), "--repeat", "0"]) == 2
    assert main(["bench", str(tmp_path), "--model", str(shipped_tiny), "--repeat", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("fastlic: error:") == 5 and "Traceback" not in err
    assert err.count("--repeat must be at least 1") == 2


def test_the_chart_title_names_16_bit_stages(tiny_model, tiny_codec, photo):
    from fastlic.runtime.codec import Codec
    from fastlic.perf.profile import _halves, profile_codec
    assert _halves(profile_codec(tiny_codec, photo, repeat=1)) == ""
    bf16 = Codec.from_model(tiny_model, dtype="bfloat16")
    assert _halves(profile_codec(bf16, photo, repeat=1)) == " (bfloat16: g_s)"
