"""A TCP relay on 127.0.0.1 for tests: it counts the bytes that pass each way, and can cut a
connection once, abruptly, after a number of bytes answered or sent (a killed connection).

    relay = Relay("127.0.0.1", target_port).start()
    ... talk to relay.url ...
    relay.received   # bytes the clients sent to the target
    relay.stop()

Threads and blocking sockets: every connection has two pumps; ``stop()`` closes everything
and joins the threads, with bounded waits."""
from __future__ import annotations

import socket
import struct
import threading


class Relay:
    def __init__(self, target_host: str, target_port: int, *, cut_after: int | None = None,
                 cut_direction: str = "sent"):
        self.target = (target_host, target_port)
        self.cut_after = cut_after  # bytes on one connection before it is cut (once)
        self.cut_direction = cut_direction  # "sent" (answered by the target) or "received" (sent by the client)
        self.received = 0  # client -> target
        self.sent = 0  # target -> client
        self.cuts = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Relay":
        self._spawn(self._accept_loop)
        return self

    def reset_counts(self) -> None:
        with self._lock:
            self.received = self.sent = 0

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            state = {"received": 0, "sent": 0}
            self._spawn(self._pump, client, upstream, "received", state)
            self._spawn(self._pump, upstream, client, "sent", state)

    def _cut(self, *socks: socket.socket) -> None:
        """Break both sides at once.  ``shutdown`` first: a plain ``close`` would wait for the other
        pump's blocked ``recv`` to let go of the socket, and the peers would see nothing for minutes."""
        for sock in socks:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass

    def _pump(self, source: socket.socket, sink: socket.socket, counter: str, state: dict) -> None:
        try:
            while True:
                data = source.recv(256 * 1024)
                if not data:
                    break
                with self._lock:
                    setattr(self, counter, getattr(self, counter) + len(data))
                    cut = False
                    state[counter] += len(data)
                    if counter == self.cut_direction and self.cut_after is not None and self.cuts == 0:
                        if state[counter] >= self.cut_after:
                            self.cuts += 1
                            cut = True
                if cut:
                    self._cut(source, sink)
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (sink, source):
                try:
                    sock.shutdown(socket.SHUT_WR if sock is sink else socket.SHUT_RD)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._sockets)
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)
