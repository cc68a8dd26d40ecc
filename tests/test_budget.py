"""The spend guard: estimates, reservations, the shared tally, and the httpx2 hooks."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import httpx2
import pytest
from _support import relay_endpoint

from pytest_imagegen.budget import (
    CHAT_REQUEST_USD,
    STATE_FILE,
    Budget,
    estimate_request,
    estimate_responses,
    event_hooks,
    excess_price,
)
from pytest_imagegen.errors import BudgetExceededError
from pytest_imagegen.profiles import get_profile

GPT_IMAGE_1 = get_profile("gpt-image-1")


def test_estimate_uses_profile_prices() -> None:
    assert Budget.estimate(GPT_IMAGE_1, quality="low", size="1024x1024") == pytest.approx(0.011)
    assert Budget.estimate(GPT_IMAGE_1, quality="high", size="1024x1536", n=2) == pytest.approx(0.5)


def test_estimate_request_is_lenient_on_invalid_values() -> None:
    # An invalid request is priced at the profile's defaults, an invalid n as one image.
    default = GPT_IMAGE_1.price()
    assert estimate_request(GPT_IMAGE_1, {"quality": "standard", "n": 50}) == pytest.approx(default)
    assert estimate_request(GPT_IMAGE_1, {"quality": "low", "n": 3}) == pytest.approx(
        GPT_IMAGE_1.price(quality="low", n=3)
    )
    assert estimate_request(GPT_IMAGE_1, {"quality": "low", "size": "1024x1024"}) == pytest.approx(
        0.011
    )
    assert estimate_request(GPT_IMAGE_1, {"n": True}) == pytest.approx(default)


def test_reserve_until_the_cap_then_refuse_with_the_figures() -> None:
    budget = Budget(0.03)
    budget.reserve(0.011)
    budget.reserve(0.011)
    with pytest.raises(BudgetExceededError) as info:
        budget.reserve(0.011, label="POST /images/generations")
    message = str(info.value)
    assert "would spend $0.0110, $0.0080 of $0.0300 left" in message
    assert "raise --imagegen-budget" in message
    assert info.value.remaining_usd == pytest.approx(0.008)
    assert budget.spent() == pytest.approx(0.022)
    assert budget.state()["refused"] == 1


def test_release_gives_the_amount_back() -> None:
    budget = Budget(0.02)
    reservation = budget.reserve(0.015)
    budget.release(reservation)
    assert budget.spent() == 0
    budget.reserve(0.02)  # exactly the cap is allowed
    assert budget.remaining() == 0


def test_excess_price_counts_images_beyond_n() -> None:
    profile = get_profile("gpt-image-1")
    body = {"model": "gpt-image-1", "quality": "low", "size": "1024x1024", "n": 2}
    one = Budget.estimate(profile, quality="low", size="1024x1024")
    assert excess_price(profile, body, 3) == pytest.approx(one)
    assert excess_price(profile, body, 2) == excess_price(profile, body, 1) == 0.0
    assert excess_price(profile, {**body, "n": None}, 4) == pytest.approx(3 * one)


def test_a_charge_passes_the_cap_and_is_shared(tmp_path: Path) -> None:
    budget = Budget(0.02, state_dir=tmp_path)
    budget.reserve(0.02)
    budget.charge(0.011)  # already spent: never refused
    budget.charge(0.0)
    state = Budget(0.02, state_dir=tmp_path).state()
    assert state["spent_usd"] == pytest.approx(0.031)
    assert (state["extra_usd"], state["charges"], state["refused"]) == (0.011, 1, 0)


def test_negative_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="budget cap"):
        Budget(-1)


def _reserve_many(state_dir: str, count: int, queue: multiprocessing.Queue) -> None:
    budget = Budget(1.0, state_dir)
    accepted = 0
    for _ in range(count):
        try:
            budget.reserve(0.03)
            accepted += 1
        except BudgetExceededError:
            pass
    queue.put(accepted)


def test_shared_tally_never_overspends_across_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    workers = [ctx.Process(target=_reserve_many, args=(str(tmp_path), 15, queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    accepted = sum(queue.get(timeout=5) for _ in workers)
    # 60 attempts of $0.03 against $1.00: exactly 33 fit, whatever the interleaving.
    assert accepted == 33
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["spent_micros"] == 33 * 30_000 <= 1_000_000
    assert state["refused"] == 60 - 33


def test_a_shared_tally_writes_nothing_until_a_reservation(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    budget = Budget(1.0, folder)
    other = Budget(1.0, folder)  # another worker of the run
    assert (budget.spent(), budget.remaining(), budget.state()["reservations"]) == (0, 1.0, 0)
    assert not folder.exists()  # reading the tally created neither file nor lock
    budget.reserve(0.25)
    assert (folder / STATE_FILE).is_file()
    assert other.spent() == pytest.approx(0.25)  # read from the file, without its lock
    listing = sorted(p.name for p in folder.iterdir())
    assert other.state()["spent_usd"] == pytest.approx(0.25)
    assert sorted(p.name for p in folder.iterdir()) == listing


def _client(hooks: dict, status: int = 200) -> httpx2.Client:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, json={"created": 1, "data": []})

    return httpx2.Client(transport=httpx2.MockTransport(answer), event_hooks=hooks)


def _generate(client: httpx2.Client, **body: object) -> httpx2.Response:
    return client.post(
        "https://relay.example.invalid/v1/images/generations",
        json={"model": "gpt-image-1", "prompt": "x", **body},
    )


def test_hooks_reserve_live_billable_requests_and_report_cost() -> None:
    budget = Budget(1.0)
    costs: list[float] = []
    with _client(event_hooks(budget, relay_endpoint(), on_cost=costs.append)) as client:
        _generate(client, quality="low", size="1024x1024")
        client.get("https://relay.example.invalid/v1/models")  # not billed
    assert costs == [pytest.approx(0.011)]
    assert budget.spent() == pytest.approx(0.011)


def test_hooks_price_a_multipart_edit_by_its_form_fields() -> None:
    budget = Budget(1.0)
    costs: list[float] = []
    with _client(event_hooks(budget, relay_endpoint(), on_cost=costs.append)) as client:
        client.post(
            "https://relay.example.invalid/v1/images/edits",
            data={
                "model": "gpt-image-1",
                "prompt": "x",
                "quality": "low",
                "size": "1024x1024",
                "n": "2",
            },
            files={"image": ("in.png", b"\x89PNG\r\n\x1a\n", "image/png")},
        )
    # Two low-quality 1024x1024 images, not the dearest price an unread body would get.
    assert costs == [pytest.approx(0.022)]


def test_hooks_refuse_a_request_over_the_cap_before_sending() -> None:
    budget = Budget(0.01)
    sent: list[httpx2.Request] = []
    hooks = event_hooks(budget, relay_endpoint())
    hooks["request"].append(sent.append)  # runs only if the guard let the request through
    with _client(hooks) as client, pytest.raises(BudgetExceededError, match="would spend"):
        _generate(client, quality="low", size="1024x1024")
    assert sent == []
    assert budget.spent() == 0


def test_hooks_give_back_refused_requests() -> None:
    budget = Budget(1.0)
    with _client(event_hooks(budget, relay_endpoint()), status=400) as client:
        _generate(client, quality="high", size="1024x1024")
    assert budget.spent() == 0


def test_hooks_ignore_replayed_and_free_endpoints() -> None:
    budget = Budget(1.0)
    with _client(event_hooks(budget, relay_endpoint(), is_live=lambda request: False)) as client:
        _generate(client, quality="high")
    reference = relay_endpoint(name="reference", is_reference=True)
    with _client(event_hooks(budget, reference)) as client:
        _generate(client, quality="high")
    assert budget.spent() == 0


def test_hooks_refund_when_the_answer_was_replayed() -> None:
    budget = Budget(1.0)
    played = [0]

    def answer(request: httpx2.Request) -> httpx2.Response:
        played[0] += 1  # what a cassette does when it replays
        return httpx2.Response(200, json={"created": 1, "data": []})

    hooks = event_hooks(budget, relay_endpoint(), replayed=lambda: played[0])
    with httpx2.Client(transport=httpx2.MockTransport(answer), event_hooks=hooks) as client:
        _generate(client, quality="low", size="1024x1024")
    assert budget.spent() == 0


# --------------------------------------------------------------------------- /responses

_TOOL = {"type": "image_generation", "quality": "low", "size": "1024x1024"}


def _respond(client: httpx2.Client, **body: object) -> httpx2.Response:
    return client.post(
        "https://relay.example.invalid/v1/responses",
        json={"model": "gpt-4o", "input": "draw a fox", **body},
    )


def test_a_responses_request_with_the_image_tool_is_priced_as_its_image() -> None:
    gpt_image_15 = get_profile("gpt-image-1.5")
    # Without the tool: the chat request alone.
    assert estimate_responses({"model": "gpt-4o", "input": "hi"}) == CHAT_REQUEST_USD
    assert estimate_responses({"tools": [{"type": "web_search"}]}) == CHAT_REQUEST_USD
    # With it: plus one image of the tool's quality and size, on the tool's model
    # (gpt-image-1.5 by default, as at OpenAI).
    assert estimate_responses({"tools": [_TOOL]}) == pytest.approx(
        CHAT_REQUEST_USD + gpt_image_15.price(quality="low", size="1024x1024")
    )
    assert estimate_responses({"tools": [{**_TOOL, "model": "gpt-image-1"}]}) == pytest.approx(
        CHAT_REQUEST_USD + 0.011
    )
    high = estimate_responses({"tools": [{**_TOOL, "quality": "high", "size": "1024x1536"}]})
    assert high == pytest.approx(
        CHAT_REQUEST_USD + gpt_image_15.price(quality="high", size="1024x1536")
    )
    assert high > estimate_responses({"tools": [_TOOL]})


def test_hooks_bill_the_responses_image_tool_and_refuse_it_over_the_cap() -> None:
    costs: list[float] = []
    budget = Budget(1.0)
    with _client(event_hooks(budget, relay_endpoint(), on_cost=costs.append)) as client:
        _respond(client, tools=[{**_TOOL, "model": "gpt-image-1"}])
        _respond(client)  # text only
    assert costs == [pytest.approx(CHAT_REQUEST_USD + 0.011), pytest.approx(CHAT_REQUEST_USD)]
    assert budget.spent() == pytest.approx(2 * CHAT_REQUEST_USD + 0.011)

    # Enough for a chat request, not for the image the tool would make.
    small = Budget(0.005)
    sent: list[httpx2.Request] = []
    hooks = event_hooks(small, relay_endpoint())
    hooks["request"].append(sent.append)
    with _client(hooks) as client:
        with pytest.raises(BudgetExceededError, match="POST /v1/responses"):
            _respond(client, tools=[_TOOL])
        _respond(client)
    assert len(sent) == 1 and small.spent() == pytest.approx(CHAT_REQUEST_USD)


def test_the_tool_on_the_endpoints_own_model_uses_its_configured_profile() -> None:
    costs: list[float] = []
    endpoint = relay_endpoint(image_model="my-images", profile=get_profile("gpt-image-1"))
    with _client(event_hooks(Budget(1.0), endpoint, on_cost=costs.append)) as client:
        _respond(client, tools=[{**_TOOL, "model": "my-images"}])
    assert costs == [pytest.approx(CHAT_REQUEST_USD + 0.011)]
