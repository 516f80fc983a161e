#!/usr/bin/env python3
"""HTTP receiver for the integration tests (python3 standard library only).

Usage: receiver.py PORTFILE LOGFILE

Binds 127.0.0.1 on a free port, writes the port number to PORTFILE (via
PORTFILE.tmp and a rename, so a reader never sees a partial number) and serves
until SIGTERM or SIGINT.

Every request (any method, any path) appends one JSON line to LOGFILE:
  {"method", "path", "headers": {lowercased name: value}, "body", "received"}
and, once answered, another line:
  {"done": path, "status": N, "answered": time}

By path prefix:
  /hang/     logs the request at once, then answers 200 only once the file
             LOGFILE.release exists (the test releases it), or after 300 s
  /fail500/  answers 500
  otherwise  answers 200 with body "ok"
"""

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HANG_SECONDS = 300

_log_lock = threading.Lock()
_log_file = None
LOG_PATH = ""


def log_line(record):
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with _log_lock:
        _log_file.write(line)
        _log_file.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _read_body(self):
        length = self.headers.get("Content-Length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = 0
            return self.rfile.read(n) if n > 0 else b""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                if not size_line:
                    break
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Trailer section, ended by an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk
            return b"".join(chunks)
        return b""

    def _handle(self):
        body = self._read_body()
        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = headers[key] + ", " + value if key in headers else value
        log_line({
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body": body.decode("utf-8", errors="replace"),
            "received": time.time(),
        })

        if self.path.startswith("/hang/"):
            deadline = time.time() + HANG_SECONDS
            while time.time() < deadline and not os.path.exists(LOG_PATH + ".release"):
                time.sleep(0.05)
            status, payload = 200, b"ok"
        elif self.path.startswith("/fail500/"):
            status, payload = 500, b"fail"
        else:
            status, payload = 200, b"ok"

        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            self.wfile.flush()
        except OSError:
            pass  # the client gave up (e.g. a timeout on /hang/)
        log_line({"done": self.path, "status": status, "answered": time.time()})

    # Any method: BaseHTTPRequestHandler dispatches to do_<METHOD>.
    def __getattr__(self, name):
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def log_message(self, format, *args):
        pass  # keep stderr quiet; LOGFILE is the record


def main():
    global _log_file, LOG_PATH
    if len(sys.argv) != 3:
        sys.stderr.write("usage: receiver.py PORTFILE LOGFILE\n")
        return 2
    port_file, log_path = sys.argv[1], sys.argv[2]
    LOG_PATH = log_path
    _log_file = open(log_path, "a", encoding="utf-8")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True

    def stop(signum, frame):
        # Exit at once: request threads are daemons, a /hang/ one must not hold us.
        with _log_lock:
            _log_file.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d" % server.server_address[1])
    os.rename(tmp, port_file)

    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
