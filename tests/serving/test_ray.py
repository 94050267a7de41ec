"""The Ray Serve deployment on a local single-node Ray cluster: HTTP round trips on
localhost, typed errors as 4xx with their one-line message, batching of concurrent
requests. One cluster and one deployment for the module (Ray starts in ~10-30 s)."""
from __future__ import annotations

import concurrent.futures
import io
import socket

import numpy as np
import pytest

pytest.importorskip("ray.serve")
requests = pytest.importorskip("requests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(weights):
    """URL of the deployment of the tiny model (quality 1): 1 replica, batches of up to 4
    gathered for 0.5 s, so concurrent requests share one."""
    import ray
    from ray import serve

    from fastlic.serving.ray_deployment import codec_app
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(codec_app([weights], engine_options={"threads": 1}, workers=2,
                            max_batch_size=4, batch_wait_timeout_s=0.5, num_cpus=0.5),
                  name="fastlic-test", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def codec(weights):
    from fastlic.runtime.codec import Codec
    return Codec.load(weights, threads=1)


def test_round_trip_over_http(server, codec, photo):
    r = requests.post(f"{server}/compress?quality=1", data=png_bytes(photo), timeout=120)
    assert r.status_code == 200, r.text
    data = r.content
    assert codec.decompress(data).shape == photo.shape
    r = requests.post(f"{server}/decompress", data=data, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    from PIL import Image
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content))),
                                  codec.decompress(data))
    r = requests.post(f"{server}/decompress?format=raw", data=data, timeout=120)
    shape = tuple(int(n) for n in r.headers["x-image-shape"].split(","))
    assert shape == photo.shape
    np.testing.assert_array_equal(np.frombuffer(r.content, np.uint8).reshape(shape),
                                  codec.decompress(data))


def test_bad_bitstream_is_a_400_with_the_typed_message(server):
    from fastlic.errors import BitstreamError
    from fastlic.runtime.bitstream import peek_header
    junk = b"not a flic file"
    with pytest.raises(BitstreamError) as raised:
        peek_header(junk)
    r = requests.post(f"{server}/decompress", data=junk, timeout=60)
    assert r.status_code == 400
    assert r.json() == {"error": type(raised.value).__name__, "message": str(raised.value)}


@pytest.mark.parametrize("path, body, status, error, words", [
    ("/compress?quality=7", "png", 400, "UsageError", "quality 7 is not served here"),
    ("/compress?quality=high", "png", 400, "UsageError", "quality must be an integer"),
    ("/compress", b"not an image", 415, "ImageFormatError", "the request body"),
    ("/decode", b"", 404, "UsageError", "no route /decode"),
])
def test_bad_requests_are_4xx(server, photo, path, body, status, error, words):
    r = requests.post(server + path, data=png_bytes(photo) if body == "png" else body, timeout=60)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error and words in r.json()["message"]
    assert "\n" not in r.json()["message"]


def test_models_route_names_the_served_model(server, codec):
    info = requests.get(f"{server}/models", timeout=60).json()
    assert info["default_quality"] == 1
    assert info["qualities"]["1"]["weights"] == codec.info.weights_hash.hex()


def test_concurrent_requests_share_a_batch(server, codec, photo):
    body = png_bytes(photo)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: requests.post(f"{server}/compress", data=body,
                                                        timeout=120), range(4)))
    assert [r.status_code for r in replies] == [200] * 4
    assert len({r.content for r in replies}) == 1     # one image, one file, whatever the batch
    assert max(int(r.headers["x-fastlic-batch"]) for r in replies) > 1
    assert codec.decompress(replies[0].content).shape == photo.shape


def test_autoscaling_options_are_valid_serve_options():
    from fastlic.serving.ray_deployment import CodecServer, _autoscaling, deployment_options
    options = deployment_options(autoscaling=_autoscaling("1:3:2"), max_batch_size=6)
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3,
                                             "target_ongoing_requests": 2}
    assert "num_replicas" not in options
    deployment = CodecServer.options(**options)      # Ray validates the autoscaling config
    assert deployment.max_ongoing_requests == 12
    assert deployment.user_config == {"max_batch_size": 6, "batch_wait_timeout_s": 0.005}
    assert CodecServer.options(**deployment_options(num_replicas=2)).num_replicas == 2


def test_main_refuses_a_bad_autoscale_before_starting_ray(capsys):
    from fastlic.serving.ray_deployment import main
    assert main(["--autoscale", "1-3"]) == 2
    assert "MIN:MAX" in capsys.readouterr().err
