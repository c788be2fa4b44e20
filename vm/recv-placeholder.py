#!/usr/bin/env python3
"""Minimal status receiver for vm/smoke.sh, which boots without brickup (VM_RECEIVER=brickup runs
the real `brickup receive`, as vm/firstboot.sh does).

usage: recv-placeholder.py PORT OUTFILE
Listens on 127.0.0.1:PORT only, appends each POST body as one line to OUTFILE (no HMAC check),
answers 200. Used by the harness's own tests until the real receiver exists.
"""
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        with open(OUT, "ab") as f:
            f.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "12")
        self.end_headers()
        self.wfile.write(b'{"ok": true}')


if __name__ == "__main__":
    PORT, OUT = int(sys.argv[1]), sys.argv[2]
    HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
