"""The fault proxy itself, against a local HTTP server: forwarding, outages, armed triggers."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.faults.netfault import FaultProxy


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: list[str] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Handler.received.append(f"{self.path} {body.decode()}")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    _Handler.received = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()


def _post(url: str, path: str, body: str, timeout: float = 5) -> str:
    request = urllib.request.Request(url + path, data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return answer.read().decode()


def test_forwards_and_refuses_during_an_outage(server: int) -> None:
    with FaultProxy(server) as proxy:
        assert _post(proxy.url, "/a", "1") == "ok"
        proxy.outage("refuse", seconds=1.0)
        with pytest.raises(urllib.error.URLError, match="refused"):
            _post(proxy.url, "/b", "2")
        time.sleep(1.5)
        assert not proxy.down
        assert _post(proxy.url, "/c", "3") == "ok"
    assert _Handler.received == ["/a 1", "/c 3"]
    [outage] = proxy.outages
    assert outage.ended is not None and outage.ended - outage.started >= 1.0


def test_blackhole_hangs_the_client(server: int) -> None:
    with FaultProxy(server) as proxy:
        proxy.outage("blackhole")
        with pytest.raises(OSError):  # a timeout
            _post(proxy.url, "/held", "x", timeout=1)
        proxy.restore()
        assert _post(proxy.url, "/after", "y") == "ok"
    assert _Handler.received == ["/after y"]


def test_an_armed_pattern_withholds_the_request(server: int) -> None:
    with FaultProxy(server) as proxy:
        proxy.arm(b"/copy", after=2)
        assert _post(proxy.url, "/copy", "1") == "ok"
        with pytest.raises(OSError):  # reset, as when the service went down
            _post(proxy.url, "/copy", "2")
        assert proxy.wait_outage(1).trigger == "b'/copy' #2"
        proxy.restore()
    assert _Handler.received == ["/copy 1"]


def test_on_answer_lets_the_request_through_and_loses_the_answer(server: int) -> None:
    with FaultProxy(server) as proxy:
        proxy.arm(b"/create", on_answer=True)
        with pytest.raises(OSError):
            _post(proxy.url, "/create", "v1")
        assert proxy.down
    assert _Handler.received == ["/create v1"]  # the service acted; the client never heard
