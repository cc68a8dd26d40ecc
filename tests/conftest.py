"""Fixtures shared by the test modules (helpers live in ``_support.py``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from _support import HTTP, REFERENCE_KEY
from hypothesis import settings

from pytest_imagegen.reference import ReferenceServer

# Many tests start a new interpreter (pytester subprocess runs, xdist workers, the CLI):
# where the environment sets PYTHONDONTWRITEBYTECODE, each one compiled every module of
# the package again and re-rewrote its asserts, a second or more of CPU apiece.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# Test outcomes must not depend on the machine's speed: no per-example deadline (a loaded
# 2-core CI machine easily takes longer than hypothesis's 200 ms default), and a printed
# blob so a failure found on CI can be reproduced.
settings.register_profile("imagegen", deadline=None, print_blob=True)
settings.load_profile("imagegen")


@pytest.fixture(scope="session", autouse=True)
def _close_shared_http_client() -> Iterator[None]:
    yield
    HTTP.close()


@pytest.fixture(scope="module")
def module_server() -> Iterator[ReferenceServer]:
    """A reference server for the module, accepting ``REFERENCE_KEY``."""
    with ReferenceServer(api_keys=[REFERENCE_KEY]) as server:
        yield server


@pytest.fixture
def server(module_server: ReferenceServer) -> Iterator[ReferenceServer]:
    """The module's reference server, reset before the test and checked after it."""
    module_server.reset()
    yield module_server
    module_server.check()
