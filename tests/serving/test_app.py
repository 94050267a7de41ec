"""The HTTP service on a real uvicorn (loopback, a free port): round trips, typed errors
-> statuses, metrics, the bounded queue (503 + Retry-After), size and pixel limits
before any decoding, timeouts, clients that disconnect, and the graceful drain.

A slow fake codec, held by an Event, fills the workers and the queue deterministically.
"""
from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from PIL import Image  # noqa: E402

from fastlic import errors  # noqa: E402
from fastlic.runtime.codec import Codec  # noqa: E402
from fastlic.serving.server import BackgroundServer  # noqa: E402
from fastlic.serving.service import ServeConfig, create_app, status_of  # noqa: E402


@pytest.fixture(scope="module")
def codec(tiny_exact):
    return Codec.from_model(tiny_exact)


@pytest.fixture(scope="module")
def png(photo) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    return buf.getvalue()


class SlowCodec:
    """compress/decompress wait for ``release`` (or raise ``error``); counts calls."""

    max_pixels = 1 << 20

    def __init__(self, error: Exception | None = None):
        self.release, self.error, self.calls = threading.Event(), error, 0

    def compress(self, image, timer=None, checksum=True):
        self.calls += 1
        if self.error is not None:
            raise self.error
        if not self.release.wait(20):
            raise RuntimeError("the test never released the codec")
        return b"FLIC-fake"


def serve(codecs, **config):
    return BackgroundServer(create_app(codecs, ServeConfig(**config)), drain_s=10)


def _pool(app):
    return app.state.service.pool


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def post_in_thread(url: str, body: bytes, results: list) -> threading.Thread:
    def run():
        results.append(httpx.post(url + "/v1/compress", content=body, timeout=30))
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def raw_request(port: int, body: bytes, length: int | None = None) -> socket.socket:
    """A POST /v1/compress sent by hand: Content-Length may claim more than is sent."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (f"POST /v1/compress HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n\r\n")
    sock.sendall(head.encode() + body)
    return sock


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def disconnects(server) -> float:
    text = httpx.get(server.url + "/metrics").text
    return metric(text, 'fastlic_disconnects_total{endpoint="compress"}')


def metric(text: str, line_start: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(line_start))


# ---- round trips and errors ---------------------------------------------------------

def test_compress_and_decompress_round_trip(codec, png, photo):
    with serve({codec.info.quality: codec}) as server, httpx.Client(base_url=server.url) as c:
        r = c.post("/v1/compress", content=png)
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-flic"
        assert r.content == codec.compress(photo)
        raw = c.post("/v1/decompress?format=raw", content=r.content)
        shape = tuple(int(raw.headers[f"x-image-{k}"]) for k in ("height", "width", "channels"))
        image = np.frombuffer(raw.content, np.uint8).reshape(shape)
        np.testing.assert_array_equal(image, codec.decompress(r.content))
        as_png = c.post("/v1/decompress", content=r.content)
        assert as_png.headers["content-type"] == "image/png"
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(as_png.content))), image)
        assert c.get("/healthz").json()["status"] == "ok"


@pytest.mark.parametrize("exc, status", [
    (errors.BadMagicError("x"), 400), (errors.CorruptBitstreamError("x"), 400),
    (errors.ModelMismatchError("x"), 422), (errors.ImageFormatError("x"), 422),
    (errors.PixelLimitError("x"), 413), (errors.OutOfMemoryError("x"), 503),
    (errors.UsageError("x"), 400), (errors.EngineError("x"), 500), (KeyError("bug"), 500)])
def test_typed_errors_map_to_statuses(exc, status, png):
    assert status_of(exc) == status
    fake = SlowCodec(error=exc)
    with serve({1: fake}) as server:
        r = httpx.post(server.url + "/v1/compress", content=png)
    assert r.status_code == status
    body = r.json()
    assert body["error"] == (type(exc).__name__ if status != 500 or
                             isinstance(exc, errors.FastlicError) else "InternalError")
    assert "\n" not in body["message"]
    assert ("retry-after" in r.headers) == (status == 503)


def test_bad_bodies_and_queries_are_refused_before_any_work(codec, tiny_exact, png):
    with serve({codec.info.quality: codec}) as server, httpx.Client(base_url=server.url) as c:
        cases = [("/v1/decompress", b"junk", 400, "BadMagicError"),
                 ("/v1/compress", b"junk", 422, "ImageFormatError"),
                 ("/v1/compress?quality=9", png, 400, "UsageError"),
                 ("/v1/compress?colour=1", png, 400, "UsageError"),
                 ("/v1/decompress?format=gif", codec.compress(np.zeros((8, 8, 3), np.uint8)),
                  400, "UsageError")]
        for path, body, status, kind in cases:
            r = c.post(path, content=body)
            assert (r.status_code, r.json()["error"]) == (status, kind), path
        other = Codec.from_model(tiny_exact, quality=7)     # a model the service lacks
        r = c.post("/v1/decompress", content=other.compress(np.zeros((8, 8, 3), np.uint8)))
        assert (r.status_code, r.json()["error"]) == (422, "ModelMismatchError")
        assert metric(c.get("/metrics").text, "fastlic_queue_wait_seconds_count") == 0


def test_the_pixel_limit_is_checked_from_the_header(png):
    fake = SlowCodec()
    fake.max_pixels = 1000                                     # the photo is 150x120
    with serve({1: fake}) as server:
        r = httpx.post(server.url + "/v1/compress", content=png)
    assert (r.status_code, r.json()["error"]) == (413, "PixelLimitError") and fake.calls == 0


def test_a_large_body_is_refused_before_it_is_read(png):
    with serve({1: SlowCodec()}, max_body_bytes=1000) as server:
        sock = raw_request(server.port, b"x" * 10, length=10_000_000)   # 10 bytes of 10 MB
        sock.settimeout(10)
        answer = sock.recv(65536).decode()
        sock.close()
        assert answer.startswith("HTTP/1.1 413") and "RequestTooLargeError" in answer
        chunked = httpx.post(server.url + "/v1/compress",
                             content=iter([b"x" * 600, b"x" * 600, b"x" * 600]))
        assert chunked.status_code == 413


def test_a_body_that_stops_arriving_times_out_with_408():
    with serve({1: SlowCodec()}, timeout_s=0.3) as server:
        sock = raw_request(server.port, b"x" * 10, length=1000)     # 990 bytes never come
        sock.settimeout(10)
        answer = sock.recv(65536).decode()
        sock.close()
    assert answer.startswith("HTTP/1.1 408") and "BodyTimeoutError" in answer


# ---- metrics ------------------------------------------------------------------------

def test_metrics_count_requests_errors_and_stages(codec, png):
    with serve({codec.info.quality: codec}) as server, httpx.Client(base_url=server.url) as c:
        data = c.post("/v1/compress", content=png).content
        c.post("/v1/decompress", content=data)
        c.post("/v1/decompress", content=b"junk")
        text = c.get("/metrics").text
    assert metric(text, 'fastlic_requests_total{endpoint="compress",status="200"}') == 1
    assert metric(text, 'fastlic_requests_total{endpoint="decompress",status="400"}') == 1
    assert metric(text, 'fastlic_errors_total{endpoint="decompress",type="BadMagicError"}') == 1
    assert metric(text, 'fastlic_stage_seconds_count{endpoint="compress",stage="g_a"}') == 1
    assert metric(text, 'fastlic_stage_seconds_count{endpoint="decompress",stage="g_s"}') == 1
    assert metric(text, 'fastlic_request_seconds_count{endpoint="compress"}') == 1
    assert metric(text, "fastlic_queue_depth") == 0 and "fastlic_workers_busy" in text


# ---- the bounded queue, timeouts, disconnects, drain -----------------------------------

def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing(png):
    fake = SlowCodec()
    app = create_app({1: fake}, ServeConfig(workers=1, queue=1, retry_after_s=3))
    with BackgroundServer(app) as server:
        results: list = []
        threads = [post_in_thread(server.url, png, results)]
        wait_until(lambda: _pool(app).running == 1)
        threads.append(post_in_thread(server.url, png, results))
        wait_until(lambda: _pool(app).waiting == 1)
        full = httpx.post(server.url + "/v1/compress", content=png)
        assert full.status_code == 503 and full.headers["retry-after"] == "3"
        assert full.json()["error"] == "QueueFullError"
        fake.release.set()
        for thread in threads:
            thread.join(30)
        assert [r.status_code for r in results] == [200, 200]
        assert all(r.content == b"FLIC-fake" for r in results)
        assert (_pool(app).waiting, _pool(app).running) == (0, 0)


def test_a_request_over_its_timeout_answers_504_and_frees_its_slot(png):
    fake = SlowCodec()
    app = create_app({1: fake}, ServeConfig(workers=1, queue=1, timeout_s=0.3))
    with BackgroundServer(app) as server:
        r = httpx.post(server.url + "/v1/compress", content=png, timeout=10)
        assert (r.status_code, r.json()["error"]) == (504, "RequestTimeoutError")
        fake.release.set()        # the running job ends; its slot comes back
        wait_until(lambda: _pool(app).running == 0)


def test_a_disconnecting_client_leaves_nothing_behind(png):
    fake = SlowCodec()
    app = create_app({1: fake}, ServeConfig(workers=1, queue=2))
    with BackgroundServer(app) as server:
        running = raw_request(server.port, png)            # takes the worker
        wait_until(lambda: _pool(app).running == 1)
        waiting = raw_request(server.port, png)            # waits in the queue
        wait_until(lambda: _pool(app).waiting == 1)
        waiting.close()
        wait_until(lambda: _pool(app).waiting == 0)        # cancelled, never run
        running.close()
        wait_until(lambda: disconnects(server) == 2)       # seen while its job runs
        assert _pool(app).running == 1
        fake.release.set()
        wait_until(lambda: _pool(app).running == 0)        # finished, answer dropped
        assert fake.calls == 1
        after = httpx.post(server.url + "/v1/compress", content=png)
        assert after.status_code == 200
        assert metric(httpx.get(server.url + "/metrics").text, "fastlic_queue_depth") == 0


def test_shutdown_drains_the_request_in_flight(png):
    fake = SlowCodec()
    app = create_app({1: fake}, ServeConfig(workers=1, queue=1))
    server = BackgroundServer(app, drain_s=20).start()
    results: list = []
    thread = post_in_thread(server.url, png, results)
    wait_until(lambda: _pool(app).running == 1)
    server.begin_stop()
    wait_until(lambda: refused(server.port))               # no new connections
    assert server.alive and not results                    # draining, not dropping
    fake.release.set()
    thread.join(30)
    assert results[0].status_code == 200 and results[0].content == b"FLIC-fake"
    assert server.stop(30)


# ---- fastlic serve and the load script -------------------------------------------------

def test_serve_main_serves_until_sigterm_then_shuts_down_gracefully(weights, png):
    import signal
    import subprocess
    import sys

    from benchmarks.serve_load import SERVE, free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "--weights", weights, "--port",
                             str(port), "--workers", "1", "--log-level", "info"],
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: proc.poll() is not None or not refused(port), timeout_s=120)
        assert httpx.get(url + "/healthz").json()["qualities"] == [1]
        assert httpx.post(url + "/v1/compress", content=png).status_code == 200
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=60)
        # uvicorn re-raises the signal once it has shut down, so managers see it
        assert proc.returncode in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in log     # the lifespan: the pool drained
    finally:
        proc.kill() if proc.poll() is None else None


def test_serve_main_refuses_bad_arguments_and_a_missing_extra(monkeypatch):
    import importlib.util

    from fastlic.serving import app as serve_app
    with pytest.raises(errors.UsageError):
        serve_app.serve_main(["--workers", "0"])
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name == "uvicorn" else object())
    with pytest.raises(errors.MissingExtraError, match=r"fastlic\[serve\]"):
        serve_app.serve_main([])


def test_the_load_script_passes_its_checks_in_a_short_run(weights, capsys):
    from benchmarks import serve_load
    status = serve_load.main(["--weights", weights, "--in-process", "--crop", "64x96",
                              "--concurrency", "1,16", "--duration-s", "0.5", "--soak-s", "1",
                              "--disconnects", "3"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "concurrency  16" in out and "RSS MB" in out and "FAIL" not in out
