"""A TCP proxy that can hang: a database (or any server) that stops answering without closing
its connections, as a blackholed network does, then comes back."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from tests.server import free_port


@dataclass
class HangingProxy:
    target: tuple[str, int]
    port: int = field(default_factory=free_port)
    _stop: threading.Event = field(default_factory=threading.Event)
    _flowing: threading.Event = field(default_factory=threading.Event)

    def start(self) -> HangingProxy:
        self._flowing.set()
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.2)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def hang(self) -> None:
        """Nothing passes any more, either way; connections stay open, new ones are accepted."""
        self._flowing.clear()

    def restore(self) -> None:
        self._flowing.set()

    def stop(self) -> None:
        self._stop.set()
        self._flowing.set()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._flowing.wait()  # a hung server does not even answer a new connection
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                data = source.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
