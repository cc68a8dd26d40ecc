"""Fixtures shared by the test modules (helpers live in ``_support.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _support import HTTP, REFERENCE_KEY

from pytest_imagegen.reference import ReferenceServer


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
