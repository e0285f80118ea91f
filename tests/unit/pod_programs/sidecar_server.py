"""A sidecar for launcher tests: waits, then serves /health and /word on $SIDECAR_PORT.

Writes its pid to $PID_FILE so a test can check it was stopped.
"""

import http.server
import os
import sys
import time

time.sleep(float(os.environ.get("STARTUP_DELAY_S", "0")))
if os.environ.get("CRASH"):
    print("sidecar crashing on purpose", flush=True)
    sys.exit(7)
if os.environ.get("PID_FILE"):
    with open(os.environ["PID_FILE"], "w") as f:
        f.write(str(os.getpid()))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/health": b"ok", "/word": os.environ.get("WORD", "").encode()}.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


print(f"sidecar listening on {os.environ['SIDECAR_PORT']}", flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["SIDECAR_PORT"])), Handler).serve_forever()
