"""A Prometheus that hangs: a TCP server that accepts connections and never answers."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def hanging_server() -> Iterator[tuple[str, Callable[[], int]]]:
    """A loopback TCP server that accepts connections and never answers: a Prometheus that
    hangs. Yields its address and a function counting the connections accepted so far."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True, name="hanging-server")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", lambda: len(held)
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()
