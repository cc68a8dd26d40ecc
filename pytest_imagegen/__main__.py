"""``python -m pytest_imagegen serve``: run the reference endpoint by hand.

Also the ``pytest-imagegen`` console script. It prints the base URL and the key to use,
then serves until Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_imagegen.reference.faults import DEFECTS, FAULTS
from pytest_imagegen.reference.server import DEFAULT_API_KEY, parse_latency

PROG = "pytest-imagegen"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"{port} is not a port number (0-65535; 0 picks a free one)"
        )
    return port


def _latency(text: str) -> dict[str, float]:
    try:
        return parse_latency(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{exc}; give SECONDS (e.g. 2) or QUALITY=SECONDS pairs (e.g. low=0.5,medium=1,high=3)"
        ) from None


def _defect(text: str) -> str:
    if text not in DEFECTS:
        raise argparse.ArgumentTypeError(
            f"unknown defect {text!r}; choose from: {', '.join(sorted(DEFECTS))}"
        )
    return text


def _key(text: str) -> str:
    if not text or text.strip() != text:
        raise argparse.ArgumentTypeError("a key must be non-empty and have no surrounding spaces")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (exposed for the documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tools of pytest-imagegen. `serve` runs the OpenAI-compatible reference "
        "image endpoint on this machine.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the reference image endpoint until Ctrl-C",
        description="Run the reference image endpoint (POST /v1/images/generations, "
        "POST /v1/chat/completions, GET /v1/models) until Ctrl-C. Prints the base URL and "
        "the API key to give your app.",
        epilog="defects: " + ", ".join(sorted(DEFECTS)) + ". Faults are scripted from tests "
        "(server.faults.add); there are " + str(len(FAULTS)) + " of them, see "
        "docs/reference-server.md.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=0, help="port to bind (default 0: a free port, printed)"
    )
    serve.add_argument(
        "--latency",
        type=_latency,
        default={"default": 0.0},
        metavar="SECONDS|QUALITY=SECONDS,...",
        help="time each image takes, overall or per quality (e.g. low=0.5,medium=1,high=3)",
    )
    serve.add_argument(
        "--key",
        dest="keys",
        action="append",
        type=_key,
        metavar="KEY",
        help=f"API key to accept (repeatable; default {DEFAULT_API_KEY})",
    )
    serve.add_argument(
        "--defect",
        dest="defects",
        action="extend",
        nargs="+",
        type=_defect,
        default=[],
        metavar="NAME",
        help="switch on deliberate misbehaviours (one or more names; repeatable)",
    )
    serve.add_argument(
        "--any-key",
        action="store_true",
        help="accept any API key (upstream mode: whatever key a gateway sends is logged, masked)",
    )
    serve.add_argument(
        "--admin-key-env",
        metavar="VAR",
        help="serve the control API under /_admin/ (faults, latency, defects, request log), "
        "authenticated with the key held by environment variable VAR; without this option "
        "there is no control API",
    )
    serve.add_argument(
        "--quiet", action="store_true", help="do not print a line per request received"
    )
    return parser


def _admin_key(var: str | None, env: Mapping[str, str]) -> str | None:
    """The control API's key from the variable named by --admin-key-env (ValueError if unusable)."""
    if var is None:
        return None
    key = (env.get(var) or "").strip()
    if not key:
        raise ValueError(
            f"--admin-key-env {var}: the environment variable {var} is not set; export the "
            f"admin key in it, e.g. export {var}=$(python -c 'import secrets; "
            "print(secrets.token_hex(16))')"
        )
    if len(key) < 8:
        raise ValueError(f"--admin-key-env {var}: the admin key must have at least 8 characters")
    return key


def _serve(args: argparse.Namespace, out: Any, err: Any, env: Mapping[str, str]) -> int:
    from pytest_imagegen.reference.server import ReferenceServer

    try:
        admin_key = _admin_key(args.admin_key_env, env)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 2
    server = ReferenceServer(
        host=args.host,
        port=args.port,
        api_keys=args.keys or None,
        latency=args.latency,
        defects=args.defects,
        accept_any_key=args.any_key,
        admin_key=admin_key,
    )
    access = logging.getLogger("pytest_imagegen.reference.access")
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    if not args.quiet:
        access.addHandler(handler)
        access.setLevel(logging.INFO)
    try:
        return _run(server, out, err)
    finally:
        access.removeHandler(handler)


def _run(server: Any, out: Any, err: Any) -> int:
    try:
        server.start()
    except OSError as exc:
        print(f"{PROG}: error: {exc.strerror or exc}", file=err)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    # Ctrl-C and SIGTERM both end the wait loop, so the server always stops cleanly; only
    # the main thread may install handlers (main() may be called from elsewhere in tests).
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        print(f"pytest-imagegen reference endpoint on {server.base_url}", file=out)
        print(f"  OPENAI_BASE_URL={server.base_url}", file=out)
        if server.accept_any_key:
            print("  OPENAI_API_KEY=(any key is accepted)", file=out)
        else:
            print(f"  OPENAI_API_KEY={server.api_key}", file=out)
        if server.admin_key is not None:
            print(
                f"  control API on {server.url}/_admin/ (admin key from the environment)", file=out
            )
        if server.defects:
            print(f"  defects: {', '.join(sorted(server.defects))}", file=out)
        print("Press Ctrl-C to stop.", file=out, flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    if server.errors:
        # Bugs in the server itself: say so plainly, the app under test was not at fault.
        print(
            f"{PROG}: the server hit {len(server.errors)} internal error(s); first: "
            f"{server.errors[0]!r}",
            file=err,
        )
    print("stopped", file=out, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pytest_imagegen`` and the ``pytest-imagegen`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return _serve(args, sys.stdout, sys.stderr, os.environ)


if __name__ == "__main__":
    sys.exit(main())
