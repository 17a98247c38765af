"""A wire tap: a TCP relay on loopback that records every byte it passes, both ways.

What an attacker on the network (or `tcpdump`) would see between two workloads: put the
tap between a client and a server, send a request through it, and look at `to_server` and
`to_client`. Plaintext HTTP reads like a letter; mutual TLS is a handshake followed by
ciphertext, and the SPIFFE identities travel inside encrypted records (TLS 1.3 encrypts the
certificates too).
"""

from __future__ import annotations

import socket
import string
import threading
from collections.abc import Callable

from labkit.net import HOST

__all__ = ["WireTap", "preview", "printable_share"]

_PRINTABLE = frozenset((string.printable.replace("\x0b", "").replace("\x0c", "")).encode())


def printable_share(data: bytes) -> float:
    """Share of bytes that are printable ASCII (text protocols ~1.0, ciphertext ~0.37)."""
    return sum(b in _PRINTABLE for b in data) / len(data) if data else 0.0


def preview(data: bytes, limit: int = 240) -> str:
    """The first `limit` bytes as text, non-printable bytes shown as '.' (like a hex dump's
    right column)."""
    shown = data[:limit]
    text = "".join(chr(b) if b in _PRINTABLE and b not in b"\r\t" else "." for b in shown)
    return text + (f" ... (+{len(data) - limit} bytes)" if len(data) > limit else "")


class WireTap:
    """Listens on a free loopback port and relays each connection to `target` (host, port).

    Use as a context manager; `url` is where clients connect. `to_server` / `to_client` hold
    all bytes relayed so far, in order; `connections` counts accepted connections.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.to_server = bytearray()
        self.to_client = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._start(self._accept)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def clear(self) -> None:
        with self._lock:
            self.to_server.clear()
            self.to_client.clear()

    def _start(self, target: Callable[..., object], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="labkit-wiretap")
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self.connections += 1
                self._sockets += [client, server]
            self._start(self._pump, client, server, self.to_server)
            self._start(self._pump, server, client, self.to_client)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bytearray) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    record += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # Pass the half-close on (or the reset): the other side sees what the peer did.
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread
        except OSError:
            pass
        self._listener.close()
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> WireTap:  # not Self: a final class in practice
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
