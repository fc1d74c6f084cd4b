"""``python -m examples.jobs_dashboard``: run the dashboard's web process with uvicorn.

Options override the ``JOBS_*`` and ``LIVEUPDATES_BACKPLANE`` variables (see `settings.py`).
Jobs run in the worker process, ``python -m examples.jobs_dashboard.worker``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

import uvicorn

from liveupdates import Limits

from .app import create_app
from .settings import Settings

# uvicorn reads a WebSocket frame whole before the hub can refuse it, up to 16 MiB by default:
# bound it to twice the hub's own limit (131072 for the default 65,536; docs/operating.md).
WS_MAX_SIZE = 2 * Limits().max_frame_bytes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.jobs_dashboard", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--ws-max-size", type=int, default=WS_MAX_SIZE, help="uvicorn's WebSocket frame limit"
    )
    parser.add_argument("--db", dest="db_path", help="SQLite file (shared by every process)")
    parser.add_argument("--backplane", help="memory:// (default) or redis://host:6379/0")
    args = vars(parser.parse_args())
    host, port, ws_max_size = args.pop("host"), args.pop("port"), args.pop("ws_max_size")
    overrides = {name: value for name, value in args.items() if value is not None}
    settings = dataclasses.replace(Settings.from_env(), **overrides)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    print(f"==> jobs dashboard on http://{host}:{port} (database {settings.db_path})")
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        ws_max_size=ws_max_size,
        ws_per_message_deflate=False,  # invalidations are small: docs/operating.md, compression
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
