"""Backends in the runtime: torch and onnxruntime Codecs, cross-backend decoding,
the export cache, typed engine errors, thread safety, and the CLI options.

One session-scoped export of a tiny shipped model (conftest ``tiny_export``) feeds
every onnxruntime test.
"""
from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from fastlic.cli import main  # noqa: E402
from fastlic.errors import (BackendMismatchError, EngineError, ModelLoadError,  # noqa: E402
                            ReconstructionMismatchError)
from fastlic.runtime.codec import Codec  # noqa: E402

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the CPU-only error")


@pytest.fixture(scope="module")
def torch_codec(shipped_tiny):
    return Codec.load(shipped_tiny, backend="torch")


@pytest.fixture(scope="module")
def ort_codec(tiny_export):
    return Codec.load(backend="onnxruntime", model_dir=tiny_export, threads=1)


@pytest.fixture(scope="module")
def images(photo):
    rng = np.random.default_rng(3)
    return {"photo": photo, "noise": rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
            "grey ramp": np.add.outer(np.arange(70), np.arange(90)).astype(np.uint8)}


def test_export_dir_codec_has_the_weights_identity_and_tables(torch_codec, ort_codec, tiny_export):
    from fastlic.export import WEIGHTS_FILE, load_manifest
    from fastlic.modelfile import file_hash
    assert ort_codec.info == torch_codec.info and ort_codec.tables == torch_codec.tables
    assert ort_codec.info.name == "fastlic-tiny-test" and ort_codec.info.quality == 1
    manifest = load_manifest(tiny_export)
    assert manifest.weights_file == WEIGHTS_FILE
    assert bytes.fromhex(manifest.weights_sha256)[:8] == torch_codec.info.weights_hash
    assert manifest.weights_sha256 == file_hash(tiny_export / WEIGHTS_FILE)
    assert (ort_codec.backend, ort_codec.device) == ("onnxruntime", "cpu")
    # torch can run from the export directory too (its weights copy)
    assert Codec.load(model_dir=tiny_export).info == torch_codec.info


def test_export_dir_of_other_weights_or_without_weights_is_refused(tiny_model, tiny_export,
                                                                    tmp_path):
    from fastlic.modelfile import ship_model
    other = tmp_path / "other.safetensors"
    ship_model(tiny_model, other, name="other", quality=0)
    with pytest.raises(ModelLoadError, match="exported from another model"):
        Codec.load(other, backend="onnxruntime", model_dir=tiny_export, threads=1)
    bare = tmp_path / "bare"
    shutil.copytree(tiny_export, bare)
    (bare / "manifest.json").write_text(
        (bare / "manifest.json").read_text().replace('"weights.safetensors"', '""'))
    with pytest.raises(ModelLoadError, match="holds no weights file"):
        Codec.load(backend="onnxruntime", model_dir=bare)


def _symbols_equal(enc: Codec, dec: Codec, data: bytes) -> bool:
    """ŷ = symbol + mean: the decoders' latents differ by float noise in the means only."""
    return float(np.abs(enc.decode_latent(data) - dec.decode_latent(data)).max()) < 1e-3


@pytest.mark.parametrize("direction", ["torch->onnxruntime", "onnxruntime->torch"])
def test_cross_backend_decodes_exactly_or_raises(torch_codec, ort_codec, images, direction):
    """Without the reconstruction checksum (--no-checksum), still never a wrong image. "Wrong" = the decoded image differs from the encoder's
    own reconstruction by more than float noise: any symbol differs, a pixel by more than
    one level, or more than 0.1% of pixels at all. Measured on Kodak, float noise in
    g_s and the means flips one level at ~1e-5 of pixels (benchmarks/cross_backend.py)."""
    enc, dec = (torch_codec, ort_codec) if direction.startswith("torch") else (ort_codec,
                                                                                torch_codec)
    for name, image in images.items():
        data, recon = enc.compress(image, return_reconstruction=True, checksum=False)
        try:
            out = dec.decompress(data)
        except BackendMismatchError:
            continue
        assert _symbols_equal(enc, dec, data), name
        diff = np.abs(out.astype(np.int16) - recon)
        assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3, (name, diff.max())


@pytest.mark.parametrize("direction", ["torch->onnxruntime", "onnxruntime->torch"])
def test_cross_backend_with_checksum_is_bit_exact_or_raises(torch_codec, ort_codec, images,
                                                            direction):
    """With the reconstruction CRC (the default), "float noise" is no longer accepted: the decoder returns
    exactly the encoder's image or raises BackendMismatchError (ReconstructionMismatchError
    included)."""
    enc, dec = (torch_codec, ort_codec) if direction.startswith("torch") else (ort_codec,
                                                                                torch_codec)
    for name, image in images.items():
        data, recon = enc.compress(image, return_reconstruction=True, checksum=True)
        try:
            out = dec.decompress(data)
        except BackendMismatchError:
            continue
        np.testing.assert_array_equal(out, recon, err_msg=name)


def test_cli_checksum_across_backends_writes_the_exact_image_or_nothing(
        shipped_tiny, tiny_export, photo, tmp_path, capsys):
    from PIL import Image
    png = tmp_path / "p.png"
    Image.fromarray(photo).save(png)
    assert main(["compress", str(png), "--model", str(shipped_tiny)]) == 0   # checksum: default
    flic, out = png.with_suffix(".flic"), tmp_path / "back.png"
    code = main(["decompress", str(flic), "-o", str(out), "--backend", "onnxruntime",
                 "--model-dir", str(tiny_export), "--threads", "1"])
    if code == 0:
        recon = Codec.load(shipped_tiny).decompress(flic.read_bytes())
        np.testing.assert_array_equal(np.asarray(Image.open(out)), recon)
    else:
        assert code == BackendMismatchError.exit_code and not out.exists()
        assert "decode with the" in capsys.readouterr().err


def test_g_s_noise_across_backends_is_returned_and_strict_catches_it(torch_codec, ort_codec,
                                                                      photo):
    """Equal symbols, an onnxruntime g_s a level off: the image is returned by default,
    strict decoding refuses it (it needs the checksum)."""
    class Noisy:
        def __init__(self, inner):
            self.inner = inner

        def run(self, inputs):
            out = dict(self.inner.run(inputs))
            out["image_hat"] = out["image_hat"] + np.float32(1 / 255)
            return out

    engines = {**ort_codec.engines, "g_s": Noisy(ort_codec.engines["g_s"])}
    noisy = Codec(ort_codec.info, engines, ort_codec.tables, "onnxruntime")
    data, recon = torch_codec.compress(photo, return_reconstruction=True)
    assert (noisy.decompress(data) != recon).any()
    assert Codec.matches_encoder(data, noisy.decompress(data)) is False
    with pytest.raises(ReconstructionMismatchError):
        noisy.decompress(data, strict=True)
    np.testing.assert_array_equal(noisy.decode_latent(data), torch_codec.decode_latent(data))


def test_torch_and_onnxruntime_decode_each_others_files_to_the_same_latent(torch_codec, ort_codec,
                                                                           images):
    """The exact entropy path: every file decodes on the other backend with default flags,
    to the encoder's symbols and ŷ bit for bit; the images differ by g_s rounding at most."""
    for image in images.values():
        for enc, dec in ((torch_codec, ort_codec), (ort_codec, torch_codec)):
            data, recon = enc.compress(image, return_reconstruction=True)
            np.testing.assert_array_equal(dec.decode_latent(data), enc.decode_latent(data))
            assert np.abs(dec.decompress(data).astype(np.int16) - recon).max() <= 1


def test_other_table_indices_across_backends_raise(torch_codec, ort_codec, photo):
    """A decoder whose engine returns other table indices (a broken engine) must stop."""
    class Drift:
        def __init__(self, inner):
            self.inner = inner

        def run(self, inputs):
            out = dict(self.inner.run(inputs))
            out["index"] = np.minimum(out["index"] + 1, 63).astype(np.float32)
            return out

    engines = {**ort_codec.engines, "anchor": Drift(ort_codec.engines["anchor"])}
    drifted = Codec(ort_codec.info, engines, ort_codec.tables, "onnxruntime")
    with pytest.raises(BackendMismatchError):
        drifted.decompress(torch_codec.compress(photo))


@pytest.mark.parametrize("backend", ["torch", "torch bfloat16", "onnxruntime"])
def test_one_codec_decodes_from_four_threads_identically(backend, torch_codec, ort_codec, images,
                                                        shipped_tiny):
    codec = {"torch": torch_codec, "onnxruntime": ort_codec}.get(backend)
    if codec is None:
        codec = Codec.load(shipped_tiny, dtype="bfloat16")
    streams = [codec.compress(im) for im in images.values()]
    streams.append(streams[0])
    expected = [codec.decompress(s) for s in streams[:4]]
    results: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(2):
            results[i] = codec.decompress(streams[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(results[i], want)


def test_export_cache_exports_once_and_replaces_a_stale_one(shipped_tiny, tiny_export, tmp_path,
                                                            monkeypatch):
    from fastlic.modelfile import file_hash
    from fastlic.runtime import sources
    calls = []

    def fake_export(weights, out, digest, log):
        calls.append(weights)
        log("exported (fake)")
        shutil.copytree(tiny_export, out, dirs_exist_ok=True)

    monkeypatch.setattr(sources, "_export", fake_export)
    lines: list[str] = []
    for _ in range(2):
        codec = Codec.load(shipped_tiny, backend="onnxruntime", cache_dir=tmp_path,
                           log=lines.append, threads=1)
    target = tmp_path / f"onnx-{file_hash(shipped_tiny)[:16]}"
    assert len(calls) == 1 and (target / "manifest.json").is_file()
    assert "exporting" in lines[0] and str(target) in lines[0]
    assert codec.info.name == "fastlic-tiny-test"
    (target / "manifest.json").write_text("{broken")
    Codec.load(shipped_tiny, backend="onnxruntime", cache_dir=tmp_path, log=lines.append, threads=1)
    assert len(calls) == 2 and not list(tmp_path.glob(".onnx-*"))


@no_cuda
def test_cuda_without_a_gpu_is_a_typed_error(shipped_tiny, tiny_model):
    with pytest.raises(EngineError, match="CUDA is not available"):
        Codec.load(shipped_tiny, device="cuda")
    with pytest.raises(EngineError, match="CUDA is not available"):
        Codec.from_model(tiny_model, device="cuda:0", cuda_graphs=True)


def test_bad_engine_options_are_typed_errors(shipped_tiny, tiny_export):
    import onnxruntime as ort
    cases = [dict(device="cpu", dtype="float16"), dict(device="cpu", cuda_graphs=True),
             dict(device="tpu"), dict(device="cpu", dtype="int8")]
    for options in cases:
        with pytest.raises(EngineError):
            Codec.load(shipped_tiny, **options)
    with pytest.raises(EngineError, match="does not take"):
        Codec.load(backend="onnxruntime", model_dir=tiny_export, dtype="float16")
    with pytest.raises(EngineError, match="unknown backend"):
        Codec.load(shipped_tiny, backend="tensorflow")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(EngineError, match="CUDA is not available to onnxruntime"):
            Codec.load(backend="onnxruntime", model_dir=tiny_export, device="cuda")


def test_torch_engine_on_cpu_runs_the_callers_model_or_an_inference_copy(tiny_model):
    from torch import nn

    from fastlic.engines import load_engines
    from fastlic.entropy.tables import build_tables
    from fastlic.errors import EngineError
    from fastlic.model.quant import with_exact
    with pytest.raises(EngineError, match="no exact entropy path"):
        load_engines("torch", tiny_model)
    model = with_exact(tiny_model, build_tables(tiny_model))
    engines = load_engines("torch", model, subpixel=False, packed=False, channels_last=False)
    assert engines["g_s"].fn.__self__ is model and not engines["g_s"].copies
    assert engines["anchor"].fn.__self__ is model.exact
    fast = load_engines("torch", model)   # the default: a converted copy
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in fast["g_s"].fn.__self__.modules())
    assert type(fast["g_s"].fn.__self__).__name__ == "PackedFastLIC"
    assert type(fast["anchor"].fn.__self__).__name__ == "ExactEntropy"
    assert any(isinstance(m, nn.ConvTranspose2d) for m in model.g_s.modules())


def test_cli_compress_with_torch_decompress_with_onnxruntime(shipped_tiny, tiny_export, photo,
                                                              tmp_path, capsys):
    from PIL import Image
    png = tmp_path / "p.png"
    Image.fromarray(photo).save(png)
    assert main(["compress", str(png), "--model", str(shipped_tiny)]) == 0
    out = tmp_path / "back.png"
    assert main(["decompress", str(png.with_suffix(".flic")), "-o", str(out), "--backend",
                 "onnxruntime", "--model-dir", str(tiny_export), "--threads", "1"]) == 0
    decoded = np.asarray(Image.open(out))
    recon = Codec.load(shipped_tiny).decompress(png.with_suffix(".flic").read_bytes())
    assert np.abs(decoded.astype(int) - recon).max() <= 1
    code = main(["decompress", str(png.with_suffix(".flic")), "-o", str(tmp_path / "x.png"),
                 "--model", str(shipped_tiny), "--device", "cuda"])
    if not torch.cuda.is_available():
        assert code == EngineError.exit_code
        assert "CUDA is not available" in capsys.readouterr().err


def test_cli_export_passes_the_weights_file(shipped_tiny, tmp_path, monkeypatch):
    import fastlic.export as export
    seen = {}

    def fake_export(model, out, **kw):
        seen.update(kw, out=out)
        return export.Manifest("tiny", "", "", 19, {}, (), 0.0, 0.0, (), {})

    monkeypatch.setattr(export, "export_model", fake_export)
    assert main(["export", "--out", str(tmp_path / "o"), "--model", str(shipped_tiny),
                 "--no-check"]) == 0
    assert seen["weights_file"] == shipped_tiny and seen["check"] is False


def test_torch_from_an_export_dir_checks_the_weights(shipped_tiny, tiny_export, tiny_model,
                                                     tmp_path):
    from fastlic.modelfile import ship_model
    assert Codec.load(shipped_tiny, model_dir=tiny_export).info.name == "fastlic-tiny-test"
    other = tmp_path / "other.safetensors"
    ship_model(tiny_model, other, name="other", quality=0)
    with pytest.raises(ModelLoadError, match="exported from another model"):
        Codec.load(other, model_dir=tiny_export)


@pytest.mark.parametrize("options", [{"channels_last": True}, {"subpixel": False}])
def test_torch_layout_options_decode_their_own_bitstreams_exactly(shipped_tiny, torch_codec,
                                                                  photo, options):
    from torch import nn
    codec = Codec.load(shipped_tiny, **options)
    network = codec.engines["g_s"].fn.__self__
    if options.get("channels_last"):
        assert network.g_s.out.weight.is_contiguous(memory_format=torch.channels_last)
    else:
        assert any(isinstance(m, nn.ConvTranspose2d) for m in network.modules())
    data, recon = codec.compress(photo, return_reconstruction=True)
    np.testing.assert_array_equal(codec.decompress(data), recon)
    # the same function as the default engines, up to float rounding
    assert np.abs(torch_codec.decompress(data).astype(np.int16) - recon).max() <= 1


@pytest.mark.parametrize("spinning", [False, True])
def test_onnxruntime_spinning_option_reaches_the_sessions(tiny_export, photo, spinning,
                                                          monkeypatch):
    import onnxruntime as ort
    seen = []
    real = ort.InferenceSession

    def recording(path, options, **kwargs):
        seen.append(options.get_session_config_entry("session.intra_op.allow_spinning"))
        return real(path, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    options = {"spinning": True} if spinning else {}
    codec = Codec.load(backend="onnxruntime", model_dir=tiny_export, threads=1, **options)
    assert seen and set(seen) == {"1" if spinning else "0"}
    data, recon = codec.compress(photo, return_reconstruction=True)
    np.testing.assert_array_equal(codec.decompress(data), recon)

