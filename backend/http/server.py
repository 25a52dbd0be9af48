"""The gunicorn worker of ``vrshq serve``: requests are read whole before a thread takes them.

gunicorn's ``gthread`` worker hands a connection to a pool thread once its first byte arrives,
and the thread then blocks reading the rest of the request: eight clients that send half a
header take all eight threads, and ``/health`` stops answering (a slow-loris attack, without
credentials). :class:`BufferedThreadWorker` keeps gthread's pool and keep-alive handling but
reads each request on the worker's event loop, without blocking, into a buffer:

* the header (at most :data:`MAX_HEADER_BYTES`) and then the body (``Content-Length``; a
  chunked body is refused with 411) must arrive within ``request_timeout`` seconds of the
  request's first byte, else the client gets a 408 and the connection is closed;
* once the header is in, the request is checked before its body is read: a body larger than
  its route takes (``BackendConfig.body_limit``) is a 413, a body over ``max_other_bytes``
  without valid credentials (when basic auth is on) a 401, and a body that would take the process past
  ``max_buffered_bytes`` of buffered requests a 503;
* only a complete request goes to a thread. ``/health``, ``/`` and ``/metrics`` go to a pool of
  their own (:data:`LIGHT_THREADS` threads), so they answer while every request thread waits
  for the model;
* a thread's socket reads and writes time out after ``request_timeout`` too (a client that
  stops reading its answer frees the thread).

Any number of half-sent requests then costs buffers and file descriptors (gunicorn's
``worker_connections``), not threads.
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import time
from concurrent import futures
from functools import partial
from typing import Any
from urllib.parse import unquote, urlsplit

from gunicorn import http
from gunicorn.workers.gthread import ThreadWorker

from vrshq.backend.http.auth import authorized, is_open, size_text

MAX_HEADER_BYTES = 64 * 1024  # request line and header fields together
LIGHT_THREADS = 2  # threads of the pool that answers /health, / and /metrics
LIGHT_PATHS = ("/", "/health", "/metrics")
DRAIN_S = 1.0  # after a refusal, how long unread request bytes are read and dropped before closing
_RECV = 256 * 1024
_REASONS = {400: "Bad Request", 401: "Unauthorized", 408: "Request Timeout", 411: "Length Required",
            413: "Content Too Large", 431: "Request Header Fields Too Large",
            503: "Service Unavailable"}



class _TimedSocket(socket.socket):
    """A client socket whose blocking mode has a timeout: gunicorn sets a socket "blocking"
    before a thread reads and writes it; here that means at most ``io_timeout`` seconds."""

    __slots__ = ()
    io_timeout: float = 30.0

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(self.io_timeout)
        else:
            super().setblocking(False)


class _Pending:
    """A request being read: bytes so far, deadline, what its header said."""

    __slots__ = ("buf", "deadline", "header_end", "length", "path", "reserved", "draining")

    def __init__(self, data: bytes, deadline: float) -> None:
        self.buf = bytearray(data)
        self.deadline = deadline
        self.header_end: int | None = None
        self.length = 0
        self.path = "/"
        self.reserved = 0
        self.draining = False


class Refusal(Exception):
    """A request answered by the worker itself (status, message, extra headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, path, lower-cased headers) of a request head (without the blank line).

    Strict where framing is decided: a header line that is not ``name: value``, two different
    Content-Lengths or a Transfer-Encoding are refused here, so this buffer and gunicorn's
    parser can never disagree on where the request ends.
    """
    lines = head.split(b"\r\n")
    try:
        method, target, version = lines[0].decode("latin-1").split(" ")
    except ValueError:
        raise Refusal(400, "malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise Refusal(400, "only HTTP/1.x is served")
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise Refusal(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        if key == "content-length" and key in headers and headers[key] != value:
            raise Refusal(400, "conflicting Content-Length headers")
        headers[key] = value
    if "transfer-encoding" in headers:
        raise Refusal(411, "send the body with a Content-Length (chunked bodies are not accepted)")
    length = headers.get("content-length", "0")
    if not length.isdigit() or len(length) > 18:
        raise Refusal(400, "invalid Content-Length")
    path = unquote(urlsplit(target).path or "/")
    return method.upper(), path, headers


def _answer(status: int, message: str, headers: dict[str, str]) -> bytes:
    body = json.dumps({"status": status, "error": message}).encode()
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class BufferedThreadWorker(ThreadWorker):
    """gthread with whole requests: see the module docstring. ``config`` is the backend's
    :class:`vrshq.backend.config.BackendConfig` (set by :func:`worker_class`)."""

    config: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: dict[Any, _Pending] = {}  # TConn -> its request so far
        self.buffered = 0  # bytes reserved by bodies being read (declared lengths)
        self.light_pool: futures.ThreadPoolExecutor | None = None

    def init_process(self) -> None:
        if self.cfg.is_ssl:
            raise RuntimeError("BufferedThreadWorker does not serve TLS; put a TLS proxy in front")
        self.light_pool = futures.ThreadPoolExecutor(max_workers=LIGHT_THREADS,
                                                     thread_name_prefix="vrshq-light")
        super().init_process()

    # ------------------------------------------------------------------ connections
    def accept(self, listener: Any) -> None:
        """gthread's accept, with the client socket as a :class:`_TimedSocket`."""
        try:
            client, addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        cls = getattr(self, "_socket_class", _TimedSocket)
        timed = cls(client.family, client.type, client.proto, fileno=client.detach())
        self.nr_conns += 1
        from gunicorn.workers.gthread import TConn

        self.enqueue_req(TConn(self.cfg, timed, addr, listener.getsockname()))

    def enqueue_req(self, conn: Any) -> None:
        """A new or kept-alive connection: read its next request on the event loop first."""
        if getattr(conn, "vrshq_light", None) is not None:
            light, conn.vrshq_light = conn.vrshq_light, None
            pool = self.light_pool if light else self.tpool
            fs = pool.submit(self.handle, conn)
            fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))
            return
        leftover = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.parser = None
        conn.initialized = False
        conn.data_ready = False
        state = _Pending(leftover, time.monotonic() + float(self.config.request_timeout))
        self.pending[conn] = state
        conn.sock.setblocking(False)
        if leftover and self._advance(conn, state):
            return
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    def _readable(self, conn: Any, _sock: Any) -> None:
        state = self.pending.get(conn)
        if state is None:
            return
        try:
            data = conn.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        if state.draining:
            return  # bytes after a refusal: dropped
        state.buf += data
        self._advance(conn, state, registered=True)

    def _advance(self, conn: Any, state: _Pending, registered: bool = False) -> bool:
        """Take in what arrived; True when the connection left the event loop (a thread has the
        complete request, or it was refused)."""
        try:
            if state.header_end is None:
                end = state.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(state.buf) > MAX_HEADER_BYTES:
                        raise Refusal(431, f"the request header is larger than {MAX_HEADER_BYTES} bytes")
                    return False
                if end > MAX_HEADER_BYTES:
                    raise Refusal(431, f"the request header is larger than {MAX_HEADER_BYTES} bytes")
                method, path, headers = parse_head(bytes(state.buf[:end]))
                state.header_end = end + 4
                state.length = int(headers.get("content-length", "0"))
                state.path = path
                self._check(method, path, headers, state)
            if len(state.buf) < state.header_end + state.length:
                return False
        except Refusal as refusal:
            self._refuse(conn, state, refusal, registered)
            return True
        self._dispatch(conn, state, registered)
        return True

    def _check(self, method: str, path: str, headers: dict[str, str], state: _Pending) -> None:
        """Before the body is read: its size for the route, credentials, the process's buffers."""
        config = self.config
        if state.length == 0:
            return
        limit = config.body_limit(path)
        if state.length > limit:
            raise Refusal(413, f"the request body is larger than {size_text(limit)} ({path} takes at "
                               "most that much)")
        # A small body is read and refused by the app (which counts it in /metrics); a body
        # bigger than any route's default for small requests is refused unread.
        if config.auth_enabled and not is_open(path) and state.length > config.max_other_bytes \
                and not authorized(config, headers.get("authorization", "")):
            raise Refusal(401, "authentication required (HTTP basic auth)",
                          {"WWW-Authenticate": 'Basic realm="vrshq"'})
        if self.buffered + state.length > config.max_buffered_bytes:
            raise Refusal(503, "busy reading other requests, retry later (VRSHQ_MAX_BUFFERED_BYTES)",
                          {"Retry-After": "5"})
        state.reserved = state.length
        self.buffered += state.length

    def _dispatch(self, conn: Any, state: _Pending, registered: bool) -> None:
        if registered:
            self.poller.unregister(conn.sock)
        self._forget(conn)
        conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(state.buf))
        conn.initialized = True  # the parser is set: gthread's init() must not replace it
        conn.data_ready = True
        conn.vrshq_light = state.path in LIGHT_PATHS
        self.enqueue_req(conn)

    def _refuse(self, conn: Any, state: _Pending, refusal: Refusal, registered: bool) -> None:
        """Answer from the event loop, stop writing, drop what the client still sends briefly."""
        self._release(state)
        try:
            conn.sock.send(_answer(refusal.status, refusal.message, refusal.headers))
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn, registered)
            return
        state.draining = True
        state.buf = bytearray()
        state.deadline = time.monotonic() + DRAIN_S
        if not registered:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    def _release(self, state: _Pending) -> None:
        self.buffered -= state.reserved
        state.reserved = 0

    def _forget(self, conn: Any) -> None:
        state = self.pending.pop(conn, None)
        if state is not None:
            self._release(state)

    def _drop(self, conn: Any, registered: bool = True) -> None:
        if registered:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
        self._forget(conn)
        self.nr_conns -= 1
        conn.close()

    def finish_request(self, conn: Any, fs: Any) -> None:
        """gthread's, but a connection that ends lingers on the event loop, not in a blocking
        drain on it (gunicorn's graceful close reads for up to 2 s on the loop's thread)."""
        try:
            result = fs.result() if not fs.cancelled() else False
        except Exception:  # noqa: BLE001 - handle() reports its own errors
            result = False
        if result:
            super().finish_request(conn, fs)
            return
        state = _Pending(b"", time.monotonic() + DRAIN_S)
        state.draining = True
        self.pending[conn] = state
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))
        except (OSError, ValueError, KeyError):
            self._drop(conn, registered=False)

    def murder_pending(self) -> None:
        """gthread's expiry of waiting connections, and of requests read too slowly (408)."""
        super().murder_pending()
        now = time.monotonic()
        for conn, state in list(self.pending.items()):
            if not self.alive or (state.draining and now >= state.deadline):
                self._drop(conn)
            elif now >= state.deadline:
                if state.buf or state.header_end is not None:
                    timeout = float(self.config.request_timeout)
                    self._refuse(conn, state, Refusal(408, f"the request did not arrive within "
                                                           f"{timeout:g} s (VRSHQ_REQUEST_TIMEOUT)"),
                                 registered=True)
                else:
                    self._drop(conn)  # a kept-alive or new connection that never sent a byte

    def handle_quit(self, sig: Any, frame: Any) -> None:
        if self.light_pool is not None:
            self.light_pool.shutdown(wait=False)
        super().handle_quit(sig, frame)


def worker_class(config: Any) -> type[BufferedThreadWorker]:
    """The worker class for gunicorn's ``worker_class`` setting, bound to ``config``."""
    timed = type("TimedSocket", (_TimedSocket,), {"__slots__": (), "io_timeout": float(config.request_timeout)})

    class Worker(BufferedThreadWorker):
        pass

    Worker.config = config
    Worker.__name__ = Worker.__qualname__ = "BufferedThreadWorker"
    Worker._socket_class = timed  # type: ignore[attr-defined]
    return Worker


__all__ = ["BufferedThreadWorker", "LIGHT_PATHS", "MAX_HEADER_BYTES", "parse_head", "worker_class"]
