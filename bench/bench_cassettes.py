"""Cassettes side by side: plain vcrpy (as pytest-recording sets it up) against ours.

The same 20 image-generation tests (one 1024x1024 PNG each, about 1.7 MB like a real
answer) are recorded from a loopback server, then replayed, with both recorders. Printed:
cassette bytes per interaction, record and replay wall time, and the per-test overhead of
each recorder over the same test with the HTTP layer mocked in memory
(``httpx2.MockTransport`` answering the very bytes the recorder would replay).

Run:  python bench/bench_cassettes.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import openai
from PIL import Image

from pytest_imagegen.cassettes import cassette_path, read_cassette, recording

TESTS = 20
API_KEY = "sk-bench-0123456789abcdefghijklmnop"


def photo_like_png(seed: str, side: int = 1024) -> bytes:
    """A PNG that compresses like a photo: smooth colour plus grain (~1.7 MB)."""
    rng = random.Random(seed)
    base = Image.new("RGB", (8, 8))
    base.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(64)])
    smooth = base.resize((side, side), Image.Resampling.BICUBIC)
    grain = Image.merge(
        "RGB", [Image.effect_noise((side, side), 14 + 10 * band) for band in range(3)]
    )
    buf = io.BytesIO()
    Image.blend(smooth, grain, 0.15).save(buf, format="PNG")
    return buf.getvalue()


def start_server(images: dict[str, bytes]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            answer = {
                "created": 1_700_000_000,
                "data": [{"b64_json": base64.b64encode(images[body["prompt"]]).decode()}],
                "usage": {"input_tokens": 9, "output_tokens": 4160, "total_tokens": 4169},
            }
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# -- the two recorders ------------------------------------------------------------------------


def plain_vcr_cassette(folder: Path, name: str, mode: str) -> AbstractContextManager:
    """What pytest-recording's ``use_cassette`` builds for a test marked ``@pytest.mark.vcr``."""
    from pytest_recording._vcr import CombinedPersister
    from vcr import VCR

    vcr = VCR(
        path_transformer=VCR.ensure_suffix(".yaml"),
        cassette_library_dir=str(folder),
        record_mode=mode,
    )
    vcr.register_persister(CombinedPersister([]))
    return vcr.use_cassette(name)


def ours_cassette(folder: Path, name: str, mode: str) -> AbstractContextManager:
    return recording(
        cassette_path(folder, "bench", "test_bench", name), mode=mode, secrets=[API_KEY]
    )


RECORDERS: dict[str, Callable[[Path, str, str], AbstractContextManager]] = {
    "vcrpy (pytest-recording)": plain_vcr_cassette,
    "pytest-imagegen": ours_cassette,
}


def cassette_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.yaml") if p.is_file()]


# -- one "test" -------------------------------------------------------------------------------


def one_test(client: openai.OpenAI, prompt: str) -> int:
    result = client.images.generate(model="gpt-image-1", prompt=prompt, size="1024x1024")
    return len(base64.b64decode(result.data[0].b64_json))


def timed_tests(
    client: openai.OpenAI,
    prompts: list[str],
    rounds: int,
    around: Callable[[int], AbstractContextManager] | None,
) -> list[float]:
    times = []
    for _ in range(rounds):
        for n, prompt in enumerate(prompts):
            start = time.perf_counter()
            if around is None:
                one_test(client, prompt)
            else:
                with around(n):
                    one_test(client, prompt)
            times.append(time.perf_counter() - start)
    return times


def mocked_client(answers: dict[str, bytes]) -> openai.OpenAI:
    """A client whose HTTP layer answers from memory: the baseline with no recorder at all."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        prompt = json.loads(request.content)["prompt"]
        return httpx2.Response(
            200, headers={"content-type": "application/json"}, content=answers[prompt]
        )

    return openai.OpenAI(
        base_url="http://127.0.0.1:9/v1",
        api_key=API_KEY,
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def replayed_bodies(folder: Path, name_of: Callable[[int], str], count: int) -> dict[str, bytes]:
    """prompt -> the response body the recorder will replay (read from its cassettes)."""
    bodies = {}
    for n in range(count):
        path = folder / f"{name_of(n)}.yaml"
        if not path.exists():
            path = cassette_path(folder, "bench", "test_bench", name_of(n))
        (interaction,) = read_cassette(path)
        body = interaction["response"]["body"]["string"]
        body = body if isinstance(body, bytes) else body.encode()
        bodies[json.loads(interaction["request"]["body"])["prompt"]] = body
    return bodies


def bench_recorder(
    label: str,
    factory: Callable[[Path, str, str], AbstractContextManager],
    folder: Path,
    base_url: str,
    prompts: list[str],
    rounds: int,
) -> dict[str, object]:
    """Record the tests once, then replay them ``rounds`` times; one row of the table."""

    def name_of(n: int) -> str:
        return f"test_generate_{n}"

    def record(n: int) -> AbstractContextManager:
        return factory(folder, name_of(n), "once")

    def replay(n: int) -> AbstractContextManager:
        return factory(folder, name_of(n), "none")

    live = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
    start = time.perf_counter()
    timed_tests(live, prompts, 1, record)
    record_s = time.perf_counter() - start
    files = cassette_files(folder)
    assert len(files) == len(prompts), files
    per_interaction = sum(p.stat().st_size for p in files) / len(prompts)

    # A fresh client, as in a new run; one warm-up round, then the measured rounds.
    offline = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
    timed_tests(offline, prompts, 1, replay)
    replayed = timed_tests(offline, prompts, rounds, replay)
    same_bytes = mocked_client(replayed_bodies(folder, name_of, len(prompts)))
    timed_tests(same_bytes, prompts, 1, None)
    mocked = timed_tests(same_bytes, prompts, rounds, None)
    return {
        "recorder": label,
        "bytes_per_interaction": per_interaction,
        "record_s": record_s,
        "replay_s": sum(replayed) / rounds,
        "replay_ms_per_test": 1000 * statistics.median(replayed),
        "mocked_ms_per_test": 1000 * statistics.median(mocked),
        "overhead_ms_per_test": 1000 * (statistics.median(replayed) - statistics.median(mocked)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="replay rounds of the 20 tests")
    args = parser.parse_args()

    prompts = [f"test image {n}: a lighthouse at dusk, variant {n}" for n in range(TESTS)]
    print(f"making {TESTS} photo-like 1024x1024 PNGs ...", flush=True)
    images = {prompt: photo_like_png(prompt) for prompt in prompts}
    mean_png = statistics.mean(len(v) for v in images.values())
    server = start_server(images)
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            bench_recorder(label, factory, Path(tmp) / str(n), base_url, prompts, args.rounds)
            for n, (label, factory) in enumerate(RECORDERS.items())
        ]
    server.shutdown()

    print()
    print(
        f"{TESTS} tests, one 1024x1024 PNG answer each (mean PNG {mean_png / 1e6:.2f} MB), "
        f"replay medians over {args.rounds} rounds"
    )
    header = (
        f"{'recorder':<26} {'bytes/interaction':>18} {'record 20 (s)':>14} "
        f"{'replay 20 (s)':>14} {'replay/test (ms)':>17} {'mocked/test (ms)':>17} "
        f"{'overhead/test (ms)':>19}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['recorder']:<26} {row['bytes_per_interaction']:>18,.0f} "
            f"{row['record_s']:>14.2f} {row['replay_s']:>14.3f} "
            f"{row['replay_ms_per_test']:>17.2f} {row['mocked_ms_per_test']:>17.2f} "
            f"{row['overhead_ms_per_test']:>19.2f}"
        )
    plain, ours = rows
    print()
    print(
        f"cassette size: {ours['bytes_per_interaction'] / 1024:.1f} KB per image interaction "
        f"(target <= 8 KB; plain vcrpy {plain['bytes_per_interaction'] / 1e6:.2f} MB), "
        f"{plain['bytes_per_interaction'] / ours['bytes_per_interaction']:.0f}x smaller"
    )
    ratio = ours["overhead_ms_per_test"] / plain["overhead_ms_per_test"]
    print(
        f"replay overhead per test: {ours['overhead_ms_per_test']:.2f} ms vs "
        f"{plain['overhead_ms_per_test']:.2f} ms = {ratio:.3f} of pytest-recording's "
        f"(target <= 0.2)"
    )
    print(
        f"replay wall time for the 20 tests: {ours['replay_s']:.3f} s vs {plain['replay_s']:.3f} s"
    )


if __name__ == "__main__":
    main()
