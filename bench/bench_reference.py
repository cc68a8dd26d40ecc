"""Benchmark of the reference server: start-to-ready time and requests per second.

Run: ``python bench/bench_reference.py`` (about 15 s). Loopback only; every loop is bounded.

- start-to-ready: ``ReferenceServer().start()`` until a first ``GET /v1/models`` answered 200,
  median of 20 fresh starts (the first start also pays for importing werkzeug, so it is
  reported apart).
- requests per second: 200 ``images.generate`` calls through the openai SDK over 4 threads,
  for a small image (dall-e-2 256x256 b64_json) and a GPT-image one (gpt-image-1 1024x1024
  png, quality low); each call has its own prompt, so every image is really encoded.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import openai

from pytest_imagegen.reference import ReferenceServer

STARTS = 20
REQUESTS = 200
THREADS = 4


def start_to_ready(http: httpx2.Client) -> float:
    started = time.perf_counter()
    server = ReferenceServer().start()
    try:
        response = http.get(
            f"{server.base_url}/models", headers={"Authorization": f"Bearer {server.api_key}"}
        )
        response.raise_for_status()
        return time.perf_counter() - started
    finally:
        server.stop()


def stop_time() -> float:
    server = ReferenceServer().start()
    started = time.perf_counter()
    server.stop()
    return time.perf_counter() - started


def throughput(label: str, **params: object) -> None:
    with ReferenceServer() as server:
        client = openai.OpenAI(
            base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=30
        )

        def one(i: int) -> float:
            began = time.perf_counter()
            result = client.images.generate(prompt=f"benchmark image {i}", **params)
            assert result.data and result.data[0].b64_json
            return time.perf_counter() - began

        one(-1)  # warm-up: imports Pillow, builds the first connection
        started = time.perf_counter()
        with ThreadPoolExecutor(THREADS) as pool:
            latencies = sorted(pool.map(one, range(REQUESTS)))
        elapsed = time.perf_counter() - started
        server.check()
    p50 = latencies[len(latencies) // 2] * 1000
    p95 = latencies[int(len(latencies) * 0.95)] * 1000
    print(
        f"{label:<42} {REQUESTS / elapsed:7.1f} req/s  "
        f"(p50 {p50:.1f} ms, p95 {p95:.1f} ms, {REQUESTS} requests, {THREADS} threads)"
    )


def main() -> None:
    with httpx2.Client(timeout=10) as http:
        first = start_to_ready(http)
        readies = [start_to_ready(http) for _ in range(STARTS)]
    stops = [stop_time() for _ in range(5)]
    median = statistics.median(readies) * 1000
    print(f"{'first start to ready (imports werkzeug)':<42} {first * 1000:7.1f} ms")
    print(
        f"{f'start to ready, median of {STARTS}':<42} {median:7.1f} ms"
        f"  (min {min(readies) * 1000:.1f}, max {max(readies) * 1000:.1f})"
    )
    print(f"{'stop(), median of 5':<42} {statistics.median(stops) * 1000:7.1f} ms")
    throughput(
        "small image: dall-e-2 256x256 b64_json",
        model="dall-e-2",
        size="256x256",
        response_format="b64_json",
    )
    throughput(
        "gpt-image-1 1024x1024 png, quality low",
        model="gpt-image-1",
        size="1024x1024",
        quality="low",
    )


if __name__ == "__main__":
    main()
