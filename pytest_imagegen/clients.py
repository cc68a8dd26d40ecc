"""SDK clients bound to an endpoint: ``openai.OpenAI`` / ``AsyncOpenAI``, or their Azure
counterparts for an endpoint with an ``api_version``.

An Azure endpoint serves each model from a *deployment*
(``/openai/deployments/{deployment}/images/generations?api-version=...``). The SDK builds
that path from the ``model`` argument, so code written for OpenAI (``model="gpt-image-1"``)
would ask for a deployment called ``gpt-image-1``. The Azure clients made here translate
model names through the endpoint's ``deployments`` table first, so the same test code and
the same fallback chain run unchanged against OpenAI, a relay and Azure.

``openai`` is imported when a client is made, never at module level.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai

    from pytest_imagegen.budget import Budget
    from pytest_imagegen.cassettes import CassetteUse
    from pytest_imagegen.config import Endpoint
    from pytest_imagegen.traffic import Traffic

#: What ``api_key`` is when an endpoint needs none (a loopback server, a replayed cassette):
#: the SDK refuses to build a client without one.
PLACEHOLDER_KEY = "sk-imagegen-placeholder"


def _options(endpoint: Endpoint, overrides: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "api_key": endpoint.api_key or PLACEHOLDER_KEY,
        "timeout": endpoint.timeout_s,
        "max_retries": endpoint.max_retries,
        "default_headers": dict(endpoint.headers) or None,
    }
    if endpoint.api_version is not None:
        options["azure_endpoint"] = azure_endpoint(endpoint.base_url)
        options["api_version"] = endpoint.api_version
        options["deployments"] = dict(endpoint.deployments)
    else:
        options["base_url"] = endpoint.base_url
    options.update(overrides)
    return options


def sync_client(endpoint: Endpoint, **overrides: Any) -> openai.OpenAI:
    """An ``openai.OpenAI`` (``AzureOpenAI`` for an Azure endpoint) bound to ``endpoint``."""
    options = _options(endpoint, overrides)
    if endpoint.api_version is not None:
        return _azure_classes()[0](**options)
    import openai

    return openai.OpenAI(**options)


def async_client(endpoint: Endpoint, **overrides: Any) -> openai.AsyncOpenAI:
    """An ``openai.AsyncOpenAI`` (``AsyncAzureOpenAI`` for Azure) bound to ``endpoint``."""
    options = _options(endpoint, overrides)
    if endpoint.api_version is not None:
        return _azure_classes()[1](**options)
    import openai

    return openai.AsyncOpenAI(**options)


def azure_endpoint(base_url: str) -> str:
    """The resource URL the SDK wants as ``azure_endpoint`` (``/openai`` is added by it)."""
    url = base_url.rstrip("/")
    return url[: -len("/openai")] if url.endswith("/openai") else url


def deployment_for(model: Any, deployments: Mapping[str, str]) -> Any:
    """The deployment serving ``model``: its entry in ``deployments``, else the model's own
    name (Azure deployments are often named after their model). Already a deployment name
    (a retry builds the request again), it is left as it is."""
    if not isinstance(model, str) or model in deployments.values():
        return model
    return deployments.get(model, model)


def _map_model(options: Any, deployments: Mapping[str, str]) -> None:
    data = getattr(options, "json_data", None)
    if not deployments or not isinstance(data, Mapping) or "model" not in data:
        return
    deployment = deployment_for(data["model"], deployments)
    if deployment != data["model"]:
        options.json_data = {**data, "model": deployment}


@functools.lru_cache(maxsize=1)
def _azure_classes() -> tuple[type[openai.AzureOpenAI], type[openai.AsyncAzureOpenAI]]:
    """The Azure client classes, defined on first use so that openai loads only then."""
    import openai

    class _Deployments:
        """Sends ``model`` through the endpoint's deployments (for both Azure clients)."""

        deployments: dict[str, str]

        def __init__(self, *, deployments: Mapping[str, str] = {}, **options: Any) -> None:
            super().__init__(**options)
            self.deployments = dict(deployments)

        def _build_request(self, options: Any, *, retries_taken: int = 0) -> Any:
            _map_model(options, self.deployments)
            return super()._build_request(options, retries_taken=retries_taken)  # type: ignore[misc]

        def copy(self, **changes: Any) -> Any:
            copied = super().copy(**changes)  # type: ignore[misc]
            copied.deployments = dict(self.deployments)
            return copied

        with_options = copy

    class AzureOpenAI(_Deployments, openai.AzureOpenAI):
        """``openai.AzureOpenAI`` that sends ``model`` through the endpoint's deployments."""

    class AsyncAzureOpenAI(_Deployments, openai.AsyncAzureOpenAI):
        """``openai.AsyncAzureOpenAI`` that sends ``model`` through the deployments."""

    return AzureOpenAI, AsyncAzureOpenAI


def bounded_async_client(bounds: Any, **kwargs: Any) -> Any:
    """An ``openai.DefaultAsyncHttpxClient`` whose requests each finish within ``bounds``
    (a :class:`pytest_imagegen.bounds.Limits`: ``timeout_s`` per request, the deadline),
    headers and body alike; keyword arguments go to the client (``event_hooks``, ...)."""
    import openai

    return openai.DefaultAsyncHttpxClient(
        transport=_async_bounded_transport(bounds, kwargs.pop("transport", None)), **kwargs
    )


def _async_bounded_transport(bounds: Any, inner: Any = None) -> Any:
    import asyncio

    import httpx2

    class ClockedBody(httpx2.AsyncByteStream):
        """The body as the client reads it, each chunk awaited within the request's time."""

        def __init__(self, inner: Any, clock: Any, request: Any) -> None:
            self._inner, self._clock, self._request = inner, clock, request

        async def __aiter__(self) -> Any:
            if self._clock.self_timed:
                # Read through the capped pool, which awaits each chunk within the clock
                # itself (and still ends an oversized body with its cut trailer in time).
                async for chunk in self._inner:
                    yield chunk
                return
            iterator = self._inner.__aiter__()
            while True:
                try:
                    chunk = await asyncio.wait_for(iterator.__anext__(), max(self._clock.left(), 0))
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise httpx2.ReadTimeout(
                        self._clock.describe(), request=self._request
                    ) from None
                self._clock.body_bytes += len(chunk)
                yield chunk

        async def aclose(self) -> None:
            await self._inner.aclose()

    class Transport(httpx2.AsyncBaseTransport):
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            from pytest_imagegen.bounds import _running

            clock = bounds.start(request)
            try:
                # The clock in the task's context: the capped pool below reads it.
                with _running(clock):
                    response: httpx2.Response = await asyncio.wait_for(
                        self._inner.handle_async_request(request), max(clock.left(), 0)
                    )
            except asyncio.TimeoutError:
                raise httpx2.ReadTimeout(clock.describe(), request=request) from None
            clock.status = response.status_code
            response.stream = ClockedBody(response.stream, clock, request)
            return response

        async def aclose(self) -> None:
            await self._inner.aclose()

    from pytest_imagegen.bounds import install_async

    return Transport(install_async(inner if inner is not None else httpx2.AsyncHTTPTransport()))


def async_event_hooks(hooks: Mapping[str, Any]) -> dict[str, list[Any]]:
    """httpx2 ``event_hooks`` of plain functions, as the coroutines an async client awaits."""

    def wrap(function: Any) -> Any:
        async def hook(value: Any) -> None:
            function(value)

        return hook

    return {event: [wrap(f) for f in functions] for event, functions in hooks.items()}


def fixture_hooks(
    endpoint: Endpoint,
    budget: Budget,
    cassette: CassetteUse,
    traffic: Traffic,
    data: dict[str, Any],
) -> dict[str, list[Any]]:
    """The hooks of a test's clients: the budget guard (live requests only), the report's
    measurements in the test's ``data``, and the ``imagegen_requests`` log."""
    from pytest_imagegen.budget import event_hooks
    from pytest_imagegen.testdata import cost_adder, measuring_hooks

    hooks = event_hooks(
        budget,
        endpoint,
        is_live=cassette.is_live,
        on_cost=cost_adder(data),
        replayed=cassette.replayed_counter(),
    )
    for added in (measuring_hooks(data, cassette.session.plays), traffic.event_hooks()):
        for event, functions in added.items():
            hooks[event].extend(functions)
    return hooks


def fixture_client(
    endpoint: Endpoint,
    hooks: Mapping[str, list[Any]],
    *,
    asynchronous: bool = False,
    transport: Any = None,
) -> Any:
    """The client ``imagegen_client`` / ``imagegen_async_client`` give a test: bound to
    ``endpoint``, each request within its ``timeout_s`` (body included), carrying
    ``hooks`` (plain functions: the budget guard, the report's measurements, the
    ``imagegen_requests`` log). ``transport``: the sync client's inner transport (a
    session pool shared per endpoint)."""
    from pytest_imagegen.bounds import Limits, bounded_client, requested_n

    # timeout_s bounds each request as a whole (body included).
    limits = Limits(
        timeout_s=float(endpoint.timeout_s),
        max_body_bytes=lambda request: endpoint.response_cap(requested_n(request)),
    )
    if not asynchronous:
        http = bounded_client(limits, transport=transport, event_hooks=dict(hooks))
        return endpoint.client(http_client=http)
    import httpx2

    http_client = bounded_async_client(
        limits,
        event_hooks=async_event_hooks(hooks),
        # No connection outlives a request: a test's event loop ends with the test, and a
        # pooled connection of a closed loop cannot be closed cleanly afterwards.
        limits=httpx2.Limits(max_connections=100, max_keepalive_connections=0),
    )
    return endpoint.async_client(http_client=http_client)


def close_async_client(client: Any) -> None:
    """Close an async client from synchronous code (a fixture's teardown)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return  # inside a running loop: its owner closes it (nothing is pooled anyway)
    import contextlib

    # A transport tied to an ended loop has nothing left open to release.
    with contextlib.suppress(Exception):
        asyncio.run(client.close())
