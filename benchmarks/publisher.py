"""The application's publisher, in a process of its own: HTTP POSTs to the server under test.

The dashboard workload of `benchmarks/delivery.py`: a web application (or a worker) tells the
hub that job ``n`` changed, and with it the dashboard's statistics, with one HTTP request per
event, from outside the hub's process. Each request is

    POST /api/live/publish   Authorization: Bearer <key>
    {"to": {"everyone": true},
     "event": {"type": "invalidate", "keys": [["jobs", n], ["dashboard-stats"]]}}

sent over one keep-alive connection (`http.client`), each request after the previous answer
(as an application's request handler does). For liveupdates the route is
`liveupdates.asgi.PublishAPI`; the other stacks serve the same route in `benchmarks/servers.py`.

Driven by `benchmarks/delivery.py` over stdin and stdout, one JSON object a line: ``post``
(``first``, ``count``, ``rate``: events ``first`` to ``first + count - 1``, at ``rate`` per
second, 0 for back to back) is answered ``{"times": [...]}``, the wall time at which each
request started; ``close`` ends the process. Any failure is answered ``{"error": ...}``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from typing import Any

PATH = "/api/live/publish"
API_KEY = "bench-publish-key-0123456789"  # (the servers' BENCH_API_KEY default)
PREFIX = b'{"to":{"everyone":true},"event":{"type":"invalidate","keys":[["jobs",'
SUFFIX = b'],["dashboard-stats"]]}}'


def body(n: int) -> bytes:
    """The request of event `n`."""
    return PREFIX + str(n).encode() + SUFFIX


class Publisher:
    def __init__(self, port: int, key: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def request(self, n: int) -> None:
        try:
            self.connection.request("POST", PATH, body(n), self.headers)
            response = self.connection.getresponse()
        except (ConnectionError, http.client.HTTPException):  # the server closed it (idle)
            self.connection.close()  # reopened by the next request
            self.connection.request("POST", PATH, body(n), self.headers)
            response = self.connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST {PATH}: {response.status} {answer[:200]!r}")

    def post(self, first: int, count: int, rate: float) -> list[float]:
        times: list[float] = []
        start = time.perf_counter()
        for i in range(count):
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            times.append(time.time())
            self.request(first + i)
        return times


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", default=API_KEY)
    args = parser.parse_args()
    publisher = Publisher(args.port, args.key)
    emit({"ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "close":
            break
        try:
            times = publisher.post(command["first"], command["count"], command["rate"])
        except Exception as exc:
            emit({"error": f"{type(exc).__name__}: {exc}"})
            continue
        emit({"times": times})


if __name__ == "__main__":
    main()
