"""A range-serving HTTP server on loopback that fails requests on a schedule (503, 429, a body cut
short), for the tests and benchmarks of reading remote inputs through passing failures."""

from __future__ import annotations

import functools
import http.server
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a body cut short is a broken response, not a short file

    def __init__(self, *args, files: dict[str, bytes], fault: Callable[[int, tuple], str | None], log: list, **kwargs):
        self.files, self.fault, self.log = files, fault, log
        super().__init__(*args, **kwargs)

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        request = (self.command, self.path, self.headers.get("Range"))
        fault = self.fault(len(self.log), request)
        self.log.append((*request, fault))
        data = self.files.get(self.path.lstrip("/"))
        if fault in ("503", "429", "slow") or data is None:
            self.send_response(404 if data is None else 429 if fault == "slow" else int(fault))
            if fault == "slow":
                self.send_header("Retry-After", "1")  # as busy servers say how long to back off
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end, status = 0, len(data), 200
        if (wanted := re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))) is not None:
            start, status = int(wanted[1]), 206
            end = min(len(data), int(wanted[2]) + 1) if wanted[2] else len(data)
        body = data[start:end]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        if fault == "cut" and len(body) > 1:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@contextmanager
def flaky_server(files: dict[str, bytes], fault: Callable[[int, tuple], str | None]) -> Iterator[tuple[str, list]]:
    """A range-serving HTTP server on loopback; ``fault(number, (method, path, range))`` says how the
    request numbered ``number`` fails: "503", "429", "slow" (429 with ``Retry-After: 1``), "cut"
    (half the body, then the connection closes), or None."""
    log: list = []
    handler = functools.partial(_FlakyHandler, files=files, fault=fault, log=log)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", log
    finally:
        server.shutdown()
        server.server_close()
