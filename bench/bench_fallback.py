"""Fallback overhead: how much time ``generate`` adds on top of the timeout and the answer.

A loopback server stalls the primary step (``quality=high``) and answers the fallback step
(``quality=low``) after ``L`` ms. With ``timeout_s`` = T the best possible time to success is
T + L; the overhead is what ``generate`` takes beyond that (thread hand-off, the SDK call,
reading and decoding the image). Target: under 50 ms (median).

    python bench/bench_fallback.py [--runs 10] [--latency-ms 200] [--timeout-s 1.0]
"""

from __future__ import annotations

import argparse
import base64
import json
import socketserver
import statistics
import sys
import threading
import time

from pytest_imagegen.config import Endpoint
from pytest_imagegen.fallback import generate
from pytest_imagegen.images import make_image
from pytest_imagegen.profiles import get_profile

TARGET_MS = 50.0


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, latency_s: float, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.latency_s = latency_s
        self.body = body
        self.stop = threading.Event()


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        headers = {}
        self.rfile.readline()
        while (line := self.rfile.readline().strip()) != b"":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        request = json.loads(self.rfile.read(int(headers.get("content-length", "0"))) or b"{}")
        if request.get("quality") == "high":
            self.server.stop.wait(30)  # the stalled primary step: say nothing
            return
        if self.server.stop.wait(self.server.latency_s):
            return
        body = self.server.body
        self.wfile.write(
            (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + body
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--latency-ms", type=float, default=200.0, help="L: answer delay of step 2")
    parser.add_argument("--timeout-s", type=float, default=1.0, help="T: the endpoint's timeout_s")
    args = parser.parse_args(argv)

    png = make_image(1024, 1024, "png", seed="bench")
    body = json.dumps(
        {"created": 1, "data": [{"b64_json": base64.b64encode(png).decode()}]}
    ).encode()
    server = _Server(args.latency_ms / 1000, body)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    endpoint = Endpoint(
        name="bench",
        base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
        image_model="gpt-image-1.5",
        profile=get_profile("gpt-image-1.5"),
        api_key="sk-bench",
        timeout_s=args.timeout_s,
        deadline_s=args.timeout_s * 3 + args.latency_ms / 1000 + 5,
        fallback=({"quality": "low"},),
    )
    client = endpoint.client()
    ideal = args.timeout_s + args.latency_ms / 1000
    overheads = []
    try:
        generate(client, endpoint, "warm-up", quality="low")  # imports, connection pool
        for run in range(1, args.runs + 1):
            began = time.monotonic()
            outcome = generate(client, endpoint, "a lighthouse at dusk", quality="high")
            wall = time.monotonic() - began
            if not outcome.ok or [a.step for a in outcome.attempts] != [1, 2]:
                print(f"run {run}: unexpected outcome\n{outcome.trace()}", file=sys.stderr)
                return 1
            overheads.append((wall - ideal) * 1000)
            first, second = outcome.attempts
            # Where the overhead goes: noticing the timeout, answering step 2 (request, read,
            # decode), and everything between and around the attempts.
            detect = (first.latency_s - args.timeout_s) * 1000
            answer = (second.latency_s - args.latency_ms / 1000) * 1000
            print(
                f"run {run:2d}: time to success {wall * 1000:7.1f} ms, "
                f"overhead {overheads[-1]:5.1f} ms (timeout noticed +{detect:.1f} ms, "
                f"step 2 beyond L +{answer:.1f} ms, "
                f"runner {overheads[-1] - detect - answer:.1f} ms)"
            )
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()

    median = statistics.median(overheads)
    print(
        f"\ntimeout_s={args.timeout_s} L={args.latency_ms:.0f} ms runs={args.runs}: overhead "
        f"median {median:.1f} ms (min {min(overheads):.1f}, max {max(overheads):.1f}); "
        f"target < {TARGET_MS:.0f} ms: {'met' if median < TARGET_MS else 'MISSED'}"
    )
    return 0 if median < TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
