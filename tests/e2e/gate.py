"""A TCP proxy that stops forwarding at thresholds until the test opens each one.

It lets a test hold a long-running operation (a snapshot streaming into S3) at a known point
for as long as it needs to observe it, instead of hoping the operation runs long enough.
Thresholds count bytes sent upstream, or, given `pattern`, how many times those bytes
carried it (the requests that name a path, say)."""
import socket
import threading


class Gate:
    """Forwards 127.0.0.1:port to `upstream`; client-to-server bytes (server-to-client ones
    when `downstream`) stop at each threshold."""

    def __init__(self, upstream_host, upstream_port, thresholds, pattern=None, downstream=False):
        self.upstream = (upstream_host, upstream_port)
        self.pattern = pattern
        self.downstream = downstream
        self.thresholds = sorted(thresholds)
        self.opened = [threading.Event() for _ in self.thresholds]
        self.reached = [threading.Event() for _ in self.thresholds]
        self.sent = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def open(self, i):
        self.opened[i].set()

    def open_all(self):
        for e in self.opened:
            e.set()

    def close(self):
        self.open_all()
        self.listener.close()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _wait_at_thresholds(self, n):
        """Counts n more (bytes or patterns) in the gated direction; blocks while the count
        stands past a closed threshold."""
        with self.lock:
            self.sent += n
            sent = self.sent
        for i, t in enumerate(self.thresholds):
            if sent >= t:
                self.reached[i].set()
                self.opened[i].wait()

    def _pipe(self, src, dst, upstream):
        counted = upstream != self.downstream
        # The end of the last chunk, so that a pattern split between two chunks is found.
        tail = b""
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if counted and self.pattern is None:
                    self._wait_at_thresholds(len(data))
                elif counted:
                    seen = tail + data
                    self._wait_at_thresholds(seen.count(self.pattern))
                    tail = seen[-(len(self.pattern) - 1):] if len(self.pattern) > 1 else b""
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
