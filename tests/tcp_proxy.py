"""`TcpProxy`: a TCP proxy in front of PostgreSQL that a test or a bench can break in two ways.

::

    client ──▶ 127.0.0.1:<port> ──accept──▶ upstream socket ──▶ server
                                 pump ◀──▶ pump   (one thread each way)

    down()    every proxied connection is reset (RST) and the port stops listening:
              a server restart or a partition that the client notices at once
    freeze()  the pumps stop forwarding, both ways, and every socket stays open:
              a cut in the network while the TCP sessions live on, noticed by
              neither side until a timeout of its own fires
    thaw()    forwarding resumes with what was held back; up() listens again after down()

It imports nothing of the test suite, so bench scripts use it too.
"""

from __future__ import annotations

import socket
import struct
import threading


class TcpProxy:
    """A TCP proxy to `target` on a free loopback port (`port`), started listening.

    Args:
        target: ``(host, port)`` of the server.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._upstream: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self.up()

    def up(self) -> None:
        """Listen (again) on `port`; new connections are proxied."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
                self._upstream.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                self._flowing.wait()
                data = source.recv(65536)
                if not data:
                    break
                self._flowing.wait()  # frozen meanwhile: hold what was read until the thaw
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def upstream_ports(self) -> set[int]:
        """Local ports of the open connections to the server: their ``client_port`` in ``pg_stat_activity``."""
        ports = set()
        with self._lock:
            for conn in self._upstream:
                try:
                    ports.add(conn.getsockname()[1])
                except OSError:  # closed meanwhile
                    pass
        return ports

    def freeze(self) -> None:
        """Stop forwarding both ways, keeping every socket open (new connections are accepted and held too)."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Forward again, starting with what was held back."""
        self._flowing.set()

    def down(self) -> None:
        """Reset every proxied connection and stop listening (connects are then refused)."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the other thread
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns, self._upstream = self._conns, [], []
        for conn in conns:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        """Thaw, then `down`: nothing is left held or open."""
        self.thaw()
        self.down()
