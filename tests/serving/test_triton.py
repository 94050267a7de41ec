"""The Triton model repository: every config.pbtxt parses as Triton's ModelConfig, and the
Python (BLS) model codes end to end against a fake ``triton_python_backend_utils`` whose
BLS requests run the repository's own ONNX files on onnxruntime. No Triton server runs."""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
from google.protobuf import json_format, text_format  # noqa: E402

from fastlic.serving.triton import triton_main, write_triton_repository  # noqa: E402
from fastlic.stages import STAGES  # noqa: E402

NP_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP64": np.float64, "TYPE_UINT8": np.uint8}


def read_config(folder: Path):
    """config.pbtxt -> Triton's ModelConfig message (raises on any schema violation)."""
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def check_tensors(declared, arrays: dict[str, np.ndarray], model: str) -> None:
    """What Triton checks of a request: the declared names, data types and dims (-1: any)."""
    assert sorted(arrays) == sorted(t.name for t in declared), model
    for t in declared:
        a = arrays[t.name]
        dtype = model_config_pb2.DataType.Name(t.data_type)
        assert a.dtype == NP_TYPES[dtype], (model, t.name, a.dtype, dtype)
        assert len(a.shape) == len(t.dims) and all(
            d in (-1, n) for d, n in zip(t.dims, a.shape)), (model, t.name, a.shape, t.dims)


def fake_pb_utils(repo: Path) -> types.ModuleType:
    """triton_python_backend_utils as far as model.py uses it; a BLS request runs the
    named stage model's 1/model.onnx, its tensors checked against that model's config."""
    pb = types.ModuleType("triton_python_backend_utils")
    sessions: dict[str, ort.InferenceSession] = {}
    pb.calls = []

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, np.asarray(array)

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError:
        INTERNAL, INVALID_ARG = "INTERNAL", "INVALID_ARG"

        def __init__(self, message, code="INTERNAL"):
            self._message, self.code = message, code

        def message(self):
            return self._message

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None):
            self._outputs, self._error = list(output_tensors), error

        def has_error(self):
            return self._error is not None

        def error(self):
            return self._error

        def output_tensors(self):
            return self._outputs

    class InferenceRequest:
        def __init__(self, model_name=None, requested_output_names=(), inputs=(),
                     preferred_memory=None):
            self.model_name, self.inputs = model_name, list(inputs)
            self.outputs = list(requested_output_names)
            self.preferred_memory = preferred_memory

        def exec(self):
            config = read_config(repo / self.model_name)
            assert config.platform == "onnxruntime_onnx" and self.preferred_memory == ("CPU", 0)
            feed = {t.name(): t.as_numpy() for t in self.inputs}
            check_tensors(config.input, feed, self.model_name)
            if self.model_name not in sessions:
                sessions[self.model_name] = ort.InferenceSession(
                    str(repo / self.model_name / "1" / "model.onnx"),
                    providers=["CPUExecutionProvider"])
            pb.calls.append(self.model_name)
            out = dict(zip(self.outputs, sessions[self.model_name].run(self.outputs, feed)))
            check_tensors([t for t in config.output if t.name in out], out, self.model_name)
            return InferenceResponse([Tensor(n, a) for n, a in out.items()])

    def by_name(tensors, name):
        return next((t for t in tensors if t.name() == name), None)

    pb.Tensor, pb.TritonError = Tensor, TritonError
    pb.InferenceRequest, pb.InferenceResponse = InferenceRequest, InferenceResponse
    pb.TRITONSERVER_MEMORY_CPU = "CPU"
    pb.PreferredMemory = lambda kind, device: (kind, device)
    pb.get_input_tensor_by_name = lambda request, name: by_name(request.inputs, name)
    pb.get_output_tensor_by_name = lambda response, name: by_name(response.output_tensors(), name)
    return pb


@pytest.fixture(scope="module")
def repo(tiny_export, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "models"
    write_triton_repository(tiny_export, out, prefix="tiny")
    return out


def load_model(repo: Path, name: str, monkeypatch):
    """The repository's model.py of ``name``, initialised as Triton does (its config as
    JSON, the model folder and version) with the fake pb_utils."""
    pb = fake_pb_utils(repo)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    spec = importlib.util.spec_from_file_location(f"triton_model_{name}",
                                                  repo / name / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = json_format.MessageToDict(read_config(repo / name), preserving_proto_field_name=True)
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(repo / name),
                      "model_version": "1", "model_name": name,
                      "model_instance_kind": "CPU", "model_instance_device_id": "0"})
    return model, pb


def infer(model, pb, name: str, array: np.ndarray):
    (response,) = model.execute([pb.InferenceRequest(inputs=[pb.Tensor(name, array)])])
    return response


def test_configs_parse_as_triton_model_configs(repo, tiny_export):
    import onnx
    names = sorted(p.name for p in repo.iterdir())
    assert names == sorted([f"tiny_{s}" for s in STAGES] + ["tiny_compress", "tiny_decompress"])
    for stage, spec in STAGES.items():
        config = read_config(repo / f"tiny_{stage}")
        assert (config.name, config.platform, config.max_batch_size) == (f"tiny_{stage}",
                                                                         "onnxruntime_onnx", 0)
        assert [t.name for t in config.input] == list(spec.inputs)
        assert [t.name for t in config.output] == list(spec.outputs)
        graph = onnx.load(str(repo / f"tiny_{stage}" / "1" / "model.onnx")).graph
        for declared, value in zip([*config.input, *config.output], [*graph.input, *graph.output]):
            assert model_config_pb2.DataType.Name(declared.data_type) == "TYPE_FP32"
            shape = [d.dim_value or -1 for d in value.type.tensor_type.shape.dim]
            assert list(declared.dims) == shape and declared.dims[0] == -1 and declared.dims[1] > 0
        assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind))
                for g in config.instance_group] == [(1, "KIND_CPU")]
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    assert ((repo / "tiny_g_s" / "1" / "model.onnx").read_bytes()
            == (tiny_export / manifest["engines"]["onnxruntime"]["g_s"]).read_bytes())
    for entry in ("compress", "decompress"):
        config = read_config(repo / f"tiny_{entry}")
        assert config.backend == "python" and not config.platform
        params = {k: v.string_value for k, v in config.parameters.items()}
        assert params["operation"] == entry
        assert {params[f"model_{s}"] for s in STAGES} == {f"tiny_{s}" for s in STAGES}
        assert (repo / f"tiny_{entry}" / "1" / "model.py").is_file()
        assert (repo / f"tiny_{entry}" / "1" / "weights.safetensors").is_file()


def test_bls_decompress_matches_codec(repo, tiny_export, photo, monkeypatch):
    """A Codec's .flic decodes through the Triton model to the onnxruntime Codec's image,
    bit for bit (same graphs), and within a level of the torch Codec's. The decoder
    checks each pass's table-index CRC, so the exact stages' indices matched."""
    from fastlic.runtime.codec import Codec
    torch_codec = Codec.load(model_dir=tiny_export, threads=1)
    ort_codec = Codec.load(backend="onnxruntime", model_dir=tiny_export, threads=1)
    data = torch_codec.compress(photo)
    model, pb = load_model(repo, "tiny_decompress", monkeypatch)
    response = infer(model, pb, "BITSTREAM", np.frombuffer(data, np.uint8))
    assert not response.has_error(), response.error().message()
    image = pb.get_output_tensor_by_name(response, "IMAGE").as_numpy()
    assert image.shape == photo.shape and image.dtype == np.uint8
    np.testing.assert_array_equal(image, ort_codec.decompress(data))
    diff = np.abs(image.astype(int) - torch_codec.decompress(data).astype(int))
    assert diff.max() <= 1
    assert pb.calls == ["tiny_h_s", "tiny_anchor", "tiny_nonanchor", "tiny_g_s"]


def test_bls_compress_writes_the_codecs_file(repo, tiny_export, photo, monkeypatch):
    """The Triton compress model's bytes are the onnxruntime Codec's, and decode anywhere."""
    from fastlic.runtime.codec import Codec
    ort_codec = Codec.load(backend="onnxruntime", model_dir=tiny_export, threads=1)
    model, pb = load_model(repo, "tiny_compress", monkeypatch)
    response = infer(model, pb, "IMAGE", photo)
    assert not response.has_error(), response.error().message()
    data = pb.get_output_tensor_by_name(response, "BITSTREAM").as_numpy().tobytes()
    assert data == ort_codec.compress(photo)
    assert pb.calls == ["tiny_g_a", "tiny_h_a", "tiny_h_s", "tiny_anchor", "tiny_nonanchor",
                        "tiny_g_s"]
    assert Codec.load(model_dir=tiny_export, threads=1).decompress(data).shape == photo.shape


def test_greyscale_round_trip_keeps_one_channel(repo, photo, monkeypatch):
    grey = np.ascontiguousarray(photo[:, :, 1:2])
    enc, pb = load_model(repo, "tiny_compress", monkeypatch)
    data = pb.get_output_tensor_by_name(infer(enc, pb, "IMAGE", grey), "BITSTREAM").as_numpy()
    dec, pb = load_model(repo, "tiny_decompress", monkeypatch)
    image = pb.get_output_tensor_by_name(infer(dec, pb, "BITSTREAM", data), "IMAGE").as_numpy()
    assert image.shape == grey.shape


def test_bad_bitstream_is_an_invalid_argument(repo, monkeypatch):
    from fastlic.errors import BitstreamError
    from fastlic.runtime.bitstream import peek_header
    model, pb = load_model(repo, "tiny_decompress", monkeypatch)
    junk = b"not a flic file at all"
    with pytest.raises(BitstreamError) as raised:
        peek_header(junk)
    response = infer(model, pb, "BITSTREAM", np.frombuffer(junk, np.uint8))
    assert response.has_error() and response.error().code == "INVALID_ARG"
    assert response.error().message() == f"{type(raised.value).__name__}: {raised.value}"
    assert pb.calls == []


def test_plans_replace_float_stages_only(tiny_export, tmp_path):
    from fastlic.errors import UsageError
    plan = tmp_path / "g_s.plan"
    plan.write_bytes(b"serialized engine")
    write_triton_repository(tiny_export, tmp_path / "repo", plans={"g_s": plan}, kind="gpu")
    config = read_config(tmp_path / "repo" / "fastlic_g_s")
    assert config.platform == "tensorrt_plan"
    written = tmp_path / "repo" / "fastlic_g_s" / "1" / "model.plan"
    assert written.read_bytes() == plan.read_bytes()
    assert [t.name for t in config.input] == ["y_hat"]

    def kind(model):
        group = read_config(tmp_path / "repo" / model).instance_group[0]
        return model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind)
    assert (kind("fastlic_g_s"), kind("fastlic_g_a"), kind("fastlic_decompress")) == (
        "KIND_GPU", "KIND_GPU", "KIND_CPU")
    with pytest.raises(UsageError, match="anchor"):
        write_triton_repository(tiny_export, tmp_path / "other", plans={"anchor": plan})


def test_existing_models_need_force(tiny_export, tmp_path):
    from fastlic.errors import OutputError
    out = tmp_path / "repo"
    (out / "someone_else").mkdir(parents=True)
    write_triton_repository(tiny_export, out)
    with pytest.raises(OutputError, match="force"):
        write_triton_repository(tiny_export, out)
    write_triton_repository(tiny_export, out, force=True)
    assert (out / "someone_else").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]   # no staging folder left


def test_triton_main(tiny_export, tmp_path, capsys):
    assert triton_main([str(tiny_export), str(tmp_path / "repo"), "--prefix", "q1",
                        "--instances", "2", "--no-gridsample"]) == 0
    assert "q1_decompress" in capsys.readouterr().out
    assert read_config(tmp_path / "repo" / "q1_h_s").instance_group[0].count == 2
    assert triton_main([str(tiny_export), str(tmp_path / "repo"), "--prefix", "q1"]) == 8
    assert triton_main([str(tmp_path), str(tmp_path / "r2")]) == 7   # no manifest.json
    assert "fastlic: error:" in capsys.readouterr().err


def test_model_file_imports_without_triton(monkeypatch):
    monkeypatch.delitem(sys.modules, "triton_python_backend_utils", raising=False)
    import fastlic.serving.triton_model as m
    assert hasattr(m.TritonPythonModel, "execute")
