"""A byte-counting TCP proxy for HTTP/1.1 registry traffic (tests only, standard library only).

Forwards bytes both ways unchanged (keep-alive, chunked bodies and long streams pass through
transparently, nothing is buffered beyond one read) and parses a COPY of each direction just enough
to attribute body bytes to requests:

- client → server: request line, headers, body framed by ``Content-Length`` or
  ``Transfer-Encoding: chunked`` (only the chunk payload is counted, not the framing);
- server → client: status line, headers, body framed by ``Content-Length``, chunked, or
  "until close"; ``HEAD`` answers, 1xx, 204 and 304 have no body. Responses are matched to
  requests in order (HTTP/1.1 answers in request order on a connection).

Every finished request becomes a :class:`Exchange` (method, target, status, request and response
body bytes). :class:`ByteProxy` exposes them plus the two counters the zero-copy tests need:
``upload_body_bytes`` (request bodies sent to ``/v2/<name>/blobs/uploads…``) and
``blob_get_bytes`` (response bodies of ``GET /v2/<name>/blobs/<digest>``), and ``reset()``.

    with ByteProxy(server.port) as proxy:
        run_client(f"{proxy.host}/project/app:tag")
        assert proxy.upload_body_bytes == 0
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

UPLOAD_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads(?:/.*)?$")
BLOB_PATH = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[a-z0-9]+:[a-fA-F0-9]+)$")
MAX_HEADER_BYTES = 256 * 1024
MAX_EXCHANGES = 100_000
READ_SIZE = 256 * 1024


class ProtocolError(Exception):
    pass


@dataclass
class Exchange:
    """One request/response pair seen by the proxy."""

    method: str
    target: str
    request_headers: dict[str, str] = field(repr=False)
    request_body_bytes: int = 0
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict, repr=False)
    response_body_bytes: int = 0
    complete: bool = False  # the response has been read in full

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    @property
    def is_upload(self) -> bool:
        return UPLOAD_PATH.match(self.path) is not None

    @property
    def is_blob_get(self) -> bool:
        return self.method == "GET" and BLOB_PATH.match(self.path) is not None

    @property
    def is_mount(self) -> bool:
        return self.method == "POST" and self.is_upload and "mount" in self.query

    def __str__(self) -> str:
        return (f"{self.method} {self.target} -> {self.status} "
                f"(request body {self.request_body_bytes} B, response body {self.response_body_bytes} B)")


def _parse_headers(block: bytes) -> tuple[str, dict[str, str]]:
    lines = block.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return lines[0], headers


class _Framer:
    """Incremental HTTP/1.1 message framing for one direction of one connection.

    ``feed(data)`` consumes bytes; ``on_head(start_line, headers) -> body mode`` is called for
    each message head, ``on_body(n)`` for body payload bytes, ``on_end()`` when a message ends.
    A body mode is ``("length", n)``, ``("chunked", None)``, ``("eof", None)`` or ``("none", None)``.
    """

    def __init__(self, on_head, on_body, on_end):
        self.on_head, self.on_body, self.on_end = on_head, on_body, on_end
        self.buf = bytearray()
        self.state = "head"
        self.left = 0

    def feed(self, data: bytes) -> None:
        self.buf += data
        while self._step():
            pass

    def eof(self) -> None:
        if self.state == "eof-body":
            self.on_end()
        self.state = "closed"

    def _begin_body(self, mode: tuple[str, int | None]) -> None:
        kind, n = mode
        if kind == "length" and n:
            self.state, self.left = "length", n
        elif kind == "chunked":
            self.state = "chunk-size"
        elif kind == "eof":
            self.state = "eof-body"
        else:
            self.state = "head"
            self.on_end()

    def _step(self) -> bool:
        buf = self.buf
        if self.state == "head":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise ProtocolError("header block too large")
                return False
            block = bytes(buf[:end])
            del buf[:end + 4]
            if not block.strip():  # stray CRLF between messages
                return True
            start, headers = _parse_headers(block.lstrip(b"\r\n"))
            mode = self.on_head(start, headers)
            if mode is None:  # an interim (1xx) response: the real head follows
                return True
            self._begin_body(mode)
            return True
        if self.state in ("length", "chunk-data"):
            if not buf:
                return False
            n = min(len(buf), self.left)
            del buf[:n]
            self.left -= n
            self.on_body(n)
            if self.left == 0:
                if self.state == "length":
                    self.state = "head"
                    self.on_end()
                else:
                    self.state = "chunk-crlf"
            return True
        if self.state == "chunk-size":
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > 4096:
                    raise ProtocolError("chunk size line too long")
                return False
            line = bytes(buf[:end]).split(b";", 1)[0].strip()
            del buf[:end + 2]
            try:
                size = int(line, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {line!r}") from None
            if size == 0:
                self.state = "trailers"
            else:
                self.state, self.left = "chunk-data", size
            return True
        if self.state == "chunk-crlf":
            if len(buf) < 2:
                return False
            if bytes(buf[:2]) != b"\r\n":
                raise ProtocolError("missing CRLF after chunk")
            del buf[:2]
            self.state = "chunk-size"
            return True
        if self.state == "trailers":
            end = buf.find(b"\r\n")
            if end < 0:
                return False
            del buf[:end + 2]
            if end == 0:
                self.state = "head"
                self.on_end()
            return True
        if self.state == "eof-body":
            if buf:
                self.on_body(len(buf))
                buf.clear()
            return False
        return False  # closed / broken: ignore


class _Connection:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: "ByteProxy", client: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.client, self.upstream = client, upstream
        self.pending: list[Exchange] = []  # requests waiting for their response, in order
        self.lock = threading.Lock()
        self.current_request: Exchange | None = None
        self.req = _Framer(self._request_head, self._request_body, self._request_end)
        self.resp = _Framer(self._response_head, self._response_body, self._response_end)
        self.parse_ok = True
        self.seen_data = False

    # client → server

    def _request_head(self, start: str, headers: dict[str, str]):
        parts = start.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise ProtocolError(f"bad request line {start!r}")
        ex = Exchange(method=parts[0].upper(), target=parts[1], request_headers=headers)
        self.current_request = ex
        with self.lock:
            self.pending.append(ex)
        self.proxy._record(ex)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return ("chunked", None)
        if "content-length" in headers:
            return ("length", int(headers["content-length"].split(",")[0]))
        return ("none", None)

    def _request_body(self, n: int) -> None:
        if self.current_request is not None:
            with self.proxy._lock:
                self.current_request.request_body_bytes += n

    def _request_end(self) -> None:
        self.current_request = None

    # server → client

    def _response_head(self, start: str, headers: dict[str, str]):
        parts = start.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ProtocolError(f"bad status line {start!r}")
        status = int(parts[1])
        if 100 <= status < 200 and status != 101:
            return None
        with self.lock:
            ex = self.pending[0] if self.pending else None
        if ex is None:
            raise ProtocolError(f"response without a request: {start!r} {headers!r}")
        with self.proxy._lock:
            ex.status, ex.response_headers = status, headers
        if ex.method == "HEAD" or status in (204, 304):
            return ("none", None)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return ("chunked", None)
        if "content-length" in headers:
            return ("length", int(headers["content-length"].split(",")[0]))
        return ("eof", None)

    def _response_body(self, n: int) -> None:
        with self.lock:
            ex = self.pending[0] if self.pending else None
        if ex is not None:
            with self.proxy._lock:
                ex.response_body_bytes += n

    def _response_end(self) -> None:
        with self.lock:
            ex = self.pending.pop(0) if self.pending else None
        if ex is not None:
            with self.proxy._lock:
                ex.complete = True

    # pumping

    def pump(self, src: socket.socket, dst: socket.socket, framer: _Framer) -> None:
        try:
            while True:
                data = src.recv(READ_SIZE)
                if not data:
                    break
                if framer is self.req and not self.seen_data:
                    self.seen_data = True
                    if data[:1] == b"\x16":  # a TLS ClientHello (clients probe https first): not ours to parse
                        self.parse_ok = False
                        self.proxy._count_tls_probe()
                if self.parse_ok:
                    try:
                        framer.feed(data)
                    except (ProtocolError, ValueError) as e:
                        self.parse_ok = False
                        self.proxy._parse_error(f"{e}")
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if self.parse_ok:
                try:
                    framer.eof()
                except Exception as e:  # noqa: BLE001 - counted, not fatal
                    self.proxy._parse_error(f"{e}")
            # Pass the half-close on; the other direction ends by itself.
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.close()
            except OSError:
                pass


class ByteProxy:
    """Listen on 127.0.0.1 (a free port), forward every connection to ``upstream_host:upstream_port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", *, max_connections: int = 256):
        self.upstream = (upstream_host, upstream_port)
        self.max_connections = max_connections
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self._dropped = 0
        self.parse_errors: list[str] = []
        self.tls_probes = 0  # connections that started with a TLS handshake (forwarded, not parsed)
        self._connections: set[_Connection] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"byte-proxy-{self.port}", daemon=True)
        self._acceptor.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def __enter__(self) -> "ByteProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # bookkeeping

    def _record(self, ex: Exchange) -> None:
        with self._lock:
            if len(self._exchanges) >= MAX_EXCHANGES:
                self._dropped += 1
                return
            self._exchanges.append(ex)

    def _count_tls_probe(self) -> None:
        with self._lock:
            self.tls_probes += 1

    def _parse_error(self, message: str) -> None:
        with self._lock:
            if len(self.parse_errors) < 100:
                self.parse_errors.append(message)

    def reset(self) -> None:
        """Forget every exchange seen so far (connections stay open)."""
        with self._lock:
            self._exchanges = []
            self._dropped = 0
            self.parse_errors = []
            self.tls_probes = 0

    @property
    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    @property
    def upload_body_bytes(self) -> int:
        """Request body bytes sent to ``/v2/<name>/blobs/uploads…`` (POST, PATCH, PUT)."""
        return sum(e.request_body_bytes for e in self.exchanges if e.is_upload)

    @property
    def blob_get_bytes(self) -> int:
        """Response body bytes of ``GET /v2/<name>/blobs/<digest>``."""
        return sum(e.response_body_bytes for e in self.exchanges if e.is_blob_get)

    def upload_bytes_by_digest(self) -> dict[str, int]:
        """Upload request body bytes per blob digest: each upload session (``…/blobs/uploads/<id>``) is
        attributed to the ``digest`` its closing PUT names (a monolithic POST names it itself);
        sessions never closed are reported under ``"unfinished:<path>"``."""
        sessions: dict[str, int] = {}
        digests: dict[str, str] = {}
        out: dict[str, int] = {}
        for e in self.exchanges:
            if not e.is_upload:
                continue
            digest = (e.query.get("digest") or [None])[0]
            if e.method == "POST":
                if digest:
                    out[digest] = out.get(digest, 0) + e.request_body_bytes
                elif e.request_body_bytes:
                    out["unfinished:" + e.path] = out.get("unfinished:" + e.path, 0) + e.request_body_bytes
                continue
            sessions[e.path] = sessions.get(e.path, 0) + e.request_body_bytes
            if e.method == "PUT" and digest:
                digests[e.path] = digest
        for path, n in sessions.items():
            key = digests.get(path, "unfinished:" + path)
            out[key] = out.get(key, 0) + n
        return out

    def uploads(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.is_upload]

    def mounts(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.is_mount]

    def summary(self) -> dict:
        ex = self.exchanges
        mounts = [e for e in ex if e.is_mount]
        return {
            "requests": len(ex),
            "upload_body_bytes": sum(e.request_body_bytes for e in ex if e.is_upload),
            "blob_get_bytes": sum(e.response_body_bytes for e in ex if e.is_blob_get),
            "mount_posts": len(mounts),
            "mounts_201": sum(1 for e in mounts if e.status == 201),
            "mounts_202": sum(1 for e in mounts if e.status == 202),
            "upload_posts_without_mount": sum(1 for e in ex if e.method == "POST" and e.is_upload and not e.is_mount),
            "dropped": self._dropped,
            "tls_probes": self.tls_probes,
            "parse_errors": list(self.parse_errors),
        }

    def describe(self) -> str:
        return "\n".join(str(e) for e in self.exchanges)

    # serving

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self._lock:
                busy = len(self._connections) >= self.max_connections
            if busy:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, client, upstream)
            with self._lock:
                self._connections.add(conn)
            t1 = threading.Thread(target=conn.pump, args=(client, upstream, conn.req), daemon=True)
            t2 = threading.Thread(target=self._serve_responses, args=(conn, t1), daemon=True)
            with self._lock:
                self._threads.update((t1, t2))
            t1.start()
            t2.start()

    def _serve_responses(self, conn: _Connection, requests_thread: threading.Thread) -> None:
        try:
            conn.pump(conn.upstream, conn.client, conn.resp)
            requests_thread.join()
        finally:
            conn.close()
            with self._lock:
                self._connections.discard(conn)
                self._threads.discard(requests_thread)
                self._threads.discard(threading.current_thread())

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every seen request has had its whole response (or its connection closed)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                waiting = [c for c in self._connections if c.pending]
            if not waiting:
                return True
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection, join the threads."""
        self._stopping.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self._acceptor.join(timeout)
        with self._lock:
            conns = list(self._connections)
            threads = list(self._threads)
        for conn in conns:
            for sock in (conn.client, conn.upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            conn.close()
        for t in threads:
            t.join(timeout)
