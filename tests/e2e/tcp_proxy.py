"""A TCP proxy between the collector and PostgreSQL that can cut every connection on cue.

    proxy = PgProxy(upstream_port=5432).start()   # listens on 127.0.0.1:proxy.port
    proxy.arm_mid_copy(after_bytes=16_384)        # cut once a COPY has sent this many bytes
    proxy.arm_at_commit()                         # cut instead of passing on a commit's reply

Cuts are abrupt: every socket is closed with SO_LINGER 0, so both ends get a reset, the way a
dropped network path or a killed proxy looks to them.

Three cues, each firing once per arm call:

- mid-COPY: a connection has sent `after_bytes` bytes of COPY data (client to server, counted
  from the message that opened the COPY, `... FROM STDIN`). The chunk that crosses the line is not
  passed on, so the server sees a COPY cut short and rolls its transaction back.
- at-commit: the server's reply to a commit (CommandComplete "COMMIT", or "COPY n" outside a
  transaction block, followed by ReadyForQuery in state idle) is dropped. The server has committed;
  the client cannot know. A writer that retries such a request without deduplication stores it twice.
- hold-at-commit: the same reply is held back instead (dropped, the connection left open), so the
  client waits for it; a test can then kill the client in the window between the commit and its
  acknowledgement, the window a crash-safe queue must replay and deduplication must absorb.

A threaded proxy (two pump threads per connection) is plenty for a handful of pooled connections.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

# Backend messages: CommandComplete 'C' int32 len tag\0, ReadyForQuery 'Z' int32 5 status.
_COMMIT_DONE = re.compile(rb"C\x00\x00\x00.(?:COMMIT|COPY \d+)\x00", re.DOTALL)
_READY_IDLE = b"Z\x00\x00\x00\x05I"
_COPY_DONE = re.compile(rb"C\x00\x00\x00.COPY \d+\x00", re.DOTALL)


@dataclass
class Cut:
    at: float  # monotonic
    cue: str
    connections: int
    copies_in_flight: int
    detail: str = ""  # at_commit: the server reply that was dropped


@dataclass
class _Conn:
    client: socket.socket
    server: socket.socket
    in_copy: bool = False
    copy_bytes: int = 0
    closed: bool = False
    threads: list[threading.Thread] = field(default_factory=list)


class PgProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._cue: str | None = None
        self._after_bytes = 0
        self._stopped = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self.cuts: list[Cut] = []
        self.held = threading.Event()  # set when a hold_at_commit cue has fired
        self.accepted = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.upstream_failures = 0

    def dsn_for(self, dsn: str) -> str:
        """The same DSN (postgres://user@127.0.0.1:PORT/db) pointed at the proxy."""
        return re.sub(r"@([^/:]+):(\d+)/", f"@127.0.0.1:{self.port}/", dsn, count=1)

    # ------------------------------------------------------------------ control

    def start(self) -> "PgProxy":
        self._accept_thread = threading.Thread(target=self._accept_loop, name="pg-proxy-accept", daemon=True)
        self._accept_thread.start()
        return self

    def arm_mid_copy(self, after_bytes: int) -> None:
        with self._lock:
            self._cue, self._after_bytes = "mid_copy", after_bytes

    def arm_at_commit(self) -> None:
        with self._lock:
            self._cue = "at_commit"

    def arm_hold_at_commit(self) -> None:
        with self._lock:
            self._cue = "hold_at_commit"
            self.held.clear()

    def armed(self) -> bool:
        with self._lock:
            return self._cue is not None

    def disarm(self) -> None:
        with self._lock:
            self._cue = None

    def cut_all(self, cue: str = "manual") -> Cut:
        with self._lock:
            return self._cut_locked(cue)

    def wait_for_cut(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.cuts) >= count:
                return True
            time.sleep(0.02)
        return len(self.cuts) >= count

    def stop(self) -> None:
        self._stopped.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            conns, self._conns = self._conns, []
            for c in conns:
                self._close(c)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)

    # ------------------------------------------------------------------ internals

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                self.upstream_failures += 1
                self._abort(client)
                continue
            client.settimeout(None)
            server.settimeout(None)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(client, server)
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            conn.threads = [
                threading.Thread(target=self._pump, args=(conn, True), daemon=True, name="pg-proxy-up"),
                threading.Thread(target=self._pump, args=(conn, False), daemon=True, name="pg-proxy-down"),
            ]
            for t in conn.threads:
                t.start()

    def _pump(self, conn: _Conn, upstream: bool) -> None:
        src, dst = (conn.client, conn.server) if upstream else (conn.server, conn.client)
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                with self._lock:
                    self._close(conn)
                return
            with self._lock:
                if conn.closed:
                    return
                fire = self._should_cut(conn, data, upstream)
                if fire and self._cue == "hold_at_commit":
                    # Swallow the reply and keep the connection: the client waits on.
                    self._cue = None
                    self.held.set()
                    continue
                if fire:
                    cut = self._cut_locked(self._cue or "?")
                    if not upstream:
                        m = _COMMIT_DONE.search(data)
                        cut.detail = m.group(0)[5:-1].decode("ascii", "replace") if m else ""
                    self._cue = None  # one cut per arm
                    return
                if upstream:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
            try:
                dst.sendall(data)
            except OSError:
                with self._lock:
                    self._close(conn)
                return

    def _should_cut(self, conn: _Conn, data: bytes, upstream: bool) -> bool:
        """Tracks the connection's COPY state and decides whether this chunk triggers the armed cue."""
        if upstream:
            if b"FROM STDIN" in data:
                conn.in_copy, conn.copy_bytes = True, 0
            if conn.in_copy:
                conn.copy_bytes += len(data)
                if self._cue == "mid_copy" and conn.copy_bytes >= self._after_bytes:
                    return True
            return False
        commit = _COMMIT_DONE.search(data)
        if _COPY_DONE.search(data):
            conn.in_copy = False
        return (
            self._cue in ("at_commit", "hold_at_commit")
            and commit is not None
            and data.find(_READY_IDLE, commit.end()) >= 0
        )

    def _cut_locked(self, cue: str) -> Cut:
        conns, self._conns = self._conns, []
        cut = Cut(
            at=time.monotonic(),
            cue=cue,
            connections=len(conns),
            copies_in_flight=sum(1 for c in conns if c.in_copy),
        )
        for c in conns:
            self._close(c)
        self.cuts.append(cut)
        return cut

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._abort(conn.client)
        self._abort(conn.server)
        try:
            self._conns.remove(conn)
        except ValueError:
            pass

    @staticmethod
    def _abort(s: socket.socket) -> None:
        """Close with a reset (SO_LINGER 0), not an orderly FIN. shutdown(SHUT_RD) first wakes a
        pump thread blocked in recv() on it, and sends nothing to the peer."""
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass
