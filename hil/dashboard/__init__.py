"""`hil dashboard`: a local web page of the runs dir (Plotly Dash, the `[dashboard]` extra), read only.

`serve(runs_dir, host, port)` runs it on a threaded WSGI server bound to `host` (127.0.0.1 unless asked);
port 0 takes a free port, printed in the first line.
"""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import TextIO

from werkzeug.serving import make_server

from hil.dashboard.app import make_app

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(runs_dir: Path, host: str = "127.0.0.1", port: int = 8050, refresh_s: float = 2.0,
          out: TextIO | None = None) -> None:
    """Serve the dashboard until Ctrl-C (KeyboardInterrupt)."""
    out = out or sys.stdout
    app = make_app(runs_dir, refresh_s)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request: the page polls every refresh_s
    # Bound here, so a port in use or a foreign address is an OSError for the caller (werkzeug would exit itself).
    listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    server = make_server(host, port, app.server, threaded=True, fd=listener.fileno())
    shown = f"[{host}]" if ":" in host else host
    print(f"dashboard of {Path(runs_dir).resolve()} on http://{shown}:{listener.getsockname()[1]}/ "
          f"(read only, refreshed every {refresh_s:g} s); Ctrl-C stops", file=out, flush=True)
    if host not in LOOPBACK:
        print(f"note: bound to {host}: anyone who can reach this machine can read the runs", file=out, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        listener.close()
