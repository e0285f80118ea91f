"""A TCP forwarder in front of one local port that can be switched to an outage.

The fault suite points a job's endpoint (S3, MLflow) at a :class:`FaultProxy` instead of the
real service, which keeps running with its data (moto keeps S3 in memory: stopping it would lose
the buckets). The proxy then plays the outage:

* ``refuse``: the port stops listening (connection refused) and live connections are reset, as
  when the service is down;
* ``blackhole``: connections are accepted but nothing is forwarded either way, as on a dead
  network path (clients hang until their own timeouts).

An outage starts now (:meth:`FaultProxy.outage`) or is armed to start when the client sends a
byte pattern (:meth:`FaultProxy.arm`): e.g. the first GET of a weights file (mid-receive), the
third ``x-amz-copy-source`` (mid-copy), or right after MLflow answered ``model-versions/create``
(the server committed, the client never hears it). Each outage is timed with ``time.monotonic``.

The forwarding runs on an asyncio loop in a daemon thread; the methods are called from the test.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["refuse", "blackhole"]
_CHUNK = 64 * 1024


@dataclass
class Outage:
    """One outage: when it started and ended (``time.monotonic``), and what started it."""

    mode: Mode
    started: float
    trigger: str
    ended: float | None = None


@dataclass
class _Trigger:
    pattern: bytes
    after: int
    mode: Mode
    seconds: float | None
    on_answer: bool
    seen: int = 0


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tail: bytes = b""
    cut_on_answer: _Trigger | None = None
    held: bool = False
    tasks: list[asyncio.Task] = field(default_factory=list)


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``, with outages on demand."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = _free_port()
        self.outages: list[Outage] = []
        self.connections = 0
        self._mode: Mode | None = None
        self._trigger: _Trigger | None = None
        self._links: set[_Link] = set()
        self._server: asyncio.base_events.Server | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"faultproxy-{self.port}", daemon=True)
        self._outage_started = threading.Event()

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen)
        return self

    def close(self) -> None:
        """Stop forwarding and the loop (every connection is dropped)."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- faults -------------------------------------------------------------------------------

    def outage(self, mode: Mode = "refuse", seconds: float | None = None, trigger: str = "now") -> None:
        """Start an outage now; it ends after ``seconds`` (None: at :meth:`restore`)."""
        self._call(self._begin, mode, seconds, trigger)

    def arm(self, pattern: bytes, *, mode: Mode = "refuse", seconds: float | None = None, after: int = 1,
            on_answer: bool = False) -> None:
        """Start an outage when a client has sent ``pattern`` for the ``after``-th time.

        By default the data carrying it is withheld (the request never reaches the service);
        with ``on_answer`` it is forwarded and the outage starts instead of relaying the
        service's answer (the service acted on the request, the client never learns it).
        """
        self._call(self._set_trigger, _Trigger(pattern, after, mode, seconds, on_answer))

    def restore(self) -> None:
        """End the current outage (no-op without one)."""
        self._call(self._end)

    def wait_outage(self, timeout_s: float) -> Outage:
        """Block until an outage has started (an armed one fired); return it."""
        if not self._outage_started.wait(timeout_s):
            raise TimeoutError(f"no outage on proxy :{self.port} -> :{self.target[1]} within {timeout_s:.0f}s "
                               f"(the armed pattern was never sent)")
        return self.outages[-1]

    @property
    def down(self) -> bool:
        return self._mode is not None

    # -- loop side ------------------------------------------------------------------------------

    def _call(self, fn, *args):
        async def run():
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _shutdown(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            self._drop(link)

    def _set_trigger(self, trigger: _Trigger) -> None:
        self._trigger = trigger

    def _begin(self, mode: Mode, seconds: float | None, trigger: str) -> None:
        if self._mode is not None:
            return
        self._mode = mode
        self.outages.append(Outage(mode=mode, started=time.monotonic(), trigger=trigger))
        if mode == "refuse":
            if self._server is not None:
                self._server.close()  # nothing listens: connection refused
                self._server = None
            for link in list(self._links):
                self._drop(link)
        else:
            for link in self._links:
                link.held = True
        if seconds is not None:
            self._timer = self._loop.call_later(seconds, lambda: self._loop.create_task(self._end()))
        self._outage_started.set()

    async def _end(self) -> None:
        if self._mode is None:
            return
        if self._timer:
            self._timer.cancel()
            self._timer = None
        if self._mode == "blackhole":
            for link in [link for link in self._links if link.held]:
                self._drop(link)  # held requests are lost: their clients time out or see a reset
        self._mode = None
        self.outages[-1].ended = time.monotonic()
        if self._server is None:
            await self._listen()

    def _drop(self, link: _Link) -> None:
        for writer in (link.client, link.upstream):
            if writer is not None:
                writer.transport.abort()
        for task in link.tasks:
            task.cancel()
        self._links.discard(link)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(client=writer, held=self._mode == "blackhole")
        self._links.add(link)
        if self._mode == "refuse":
            self._drop(link)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._drop(link)
            return
        link.upstream = up_writer
        answer = self._loop.create_task(self._pump(link, up_reader, writer, False))
        link.tasks = [asyncio.current_task(), answer]
        try:
            await self._pump(link, reader, up_writer, True)
            await answer
        except asyncio.CancelledError:
            pass
        finally:
            if link in self._links:
                self._links.discard(link)
                for side in (writer, up_writer):
                    side.close()

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    from_client: bool) -> None:
        """Copy one direction until EOF, applying the armed trigger and a blackhole."""
        try:
            while data := await reader.read(_CHUNK):
                if link.held:
                    continue  # a blackhole swallows everything
                if from_client and self._fires(link, data):
                    continue
                if not from_client and link.cut_on_answer is not None:
                    trigger = link.cut_on_answer
                    self._begin(trigger.mode, trigger.seconds, f"after the answer to {trigger.pattern!r}")
                    self._drop(link)
                    return
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            pass

    def _fires(self, link: _Link, data: bytes) -> bool:
        """Count the armed pattern in ``data``; True when the data must be withheld (outage begun)."""
        trigger = self._trigger
        if trigger is None:
            return False
        window = link.tail + data
        link.tail = window[-(len(trigger.pattern) - 1):] if len(trigger.pattern) > 1 else b""
        trigger.seen += window.count(trigger.pattern)
        if trigger.seen < trigger.after:
            return False
        self._trigger = None
        if trigger.on_answer:
            link.cut_on_answer = trigger
            return False
        self._begin(trigger.mode, trigger.seconds, f"{trigger.pattern!r} #{trigger.after}")
        if trigger.mode == "blackhole":
            link.held = True
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
