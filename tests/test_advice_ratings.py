"""The three ratings (response time, success rate, cost per image) and the cost advice."""

from __future__ import annotations

import pytest
from _support import relay_endpoint

from pytest_imagegen.advice import cost_advice, describe
from pytest_imagegen.profiles import get_profile
from pytest_imagegen.ratings import RATINGS, UNACCEPTABLE, rate, threshold_problem

GPT_IMAGE_1 = get_profile("gpt-image-1")


@pytest.mark.parametrize(
    ("key", "value", "level"),
    [
        ("response_time_s", 3.0, "excellent"),  # thresholds are inclusive
        ("response_time_s", 3.01, "good"),
        ("response_time_s", 15.0, "acceptable"),
        ("response_time_s", 30.0, "poor"),
        ("response_time_s", 30.5, UNACCEPTABLE),
        ("success_rate", 1.0, "excellent"),
        ("success_rate", 0.97, "good"),
        ("success_rate", 0.90, "acceptable"),
        ("success_rate", 0.5, UNACCEPTABLE),
        ("cost_per_image_usd", 0.011, "excellent"),
        ("cost_per_image_usd", 0.05, "acceptable"),
        ("cost_per_image_usd", 0.167, UNACCEPTABLE),
    ],
)
def test_default_thresholds(key: str, value: float, level: str) -> None:
    assert rate(key, value) == level


def test_configured_thresholds_replace_the_defaults_and_no_value_has_no_rating() -> None:
    assert rate("response_time_s", 20.0, [30, 60, 120, 300]) == "excellent"
    assert rate("success_rate", 0.5, [0.5, 0.4, 0.3, 0.2]) == "excellent"
    assert rate("response_time_s", None) is None


@pytest.mark.parametrize(
    ("key", "values", "words"),
    [
        ("response_time_s", [3, 8, 15], "give 4 thresholds"),
        ("response_time_s", [3, 2, 15, 30], "strictly increasing"),
        ("success_rate", [0.9, 0.95, 0.8, 0.7], "strictly decreasing"),
        ("success_rate", [1.5, 0.95, 0.9, 0.85], "between 0 and 1"),
        ("cost_per_image_usd", [-1, 0.04, 0.06, 0.1], ">= 0"),
    ],
)
def test_bad_thresholds_are_named_with_an_example(key: str, values: list, words: str) -> None:
    problem = threshold_problem(key, values)
    assert problem is not None and words in problem and f"{key} = [" in problem
    assert threshold_problem(key, list(RATINGS[key].default)) is None


def test_cheapest_passing_parameters_and_the_saving() -> None:
    endpoint = relay_endpoint()
    succeeded = [
        ("t::a", {"model": "gpt-image-1", "quality": "high", "size": "1024x1024"}),
        ("t::b", {"model": "gpt-image-1", "quality": "low", "size": "1024x1024"}),
        ("t::c", {"model": "gpt-image-1", "quality": "low", "size": "1024x1024"}),
        # Not a model the endpoint declares: no advice to switch to it.
        ("t::d", {"model": "gpt-image-1-mini", "quality": "low", "size": "1024x1024"}),
    ]
    advice = cost_advice(endpoint, succeeded)
    assert advice is not None
    configured = advice["configured"]
    assert configured["params"]["quality"] == "auto"  # what the app gets when it sets none
    cheapest = advice["cheapest_passing"]
    low = GPT_IMAGE_1.price(quality="low", size="1024x1024")
    assert cheapest["cost_per_image_usd"] == pytest.approx(low)
    assert cheapest["changes"] == {"quality": "low", "size": "1024x1024"}
    assert cheapest["passed_in"] == ["t::b", "t::c"]
    expected = (configured["cost_per_image_usd"] - low) * 1000
    assert advice["saving_per_1000_images_usd"] == pytest.approx(expected, abs=1e-3)
    text = describe(advice)
    assert "quality=low size=1024x1024 passed the same checks" in text


def test_a_declared_fallback_model_of_the_family_counts_and_nothing_cheaper_says_so() -> None:
    endpoint = relay_endpoint(fallback=({"model": "gpt-image-1-mini", "quality": "low"},))
    succeeded = [("t::m", {"model": "gpt-image-1-mini", "quality": "low", "size": "1024x1024"})]
    advice = cost_advice(endpoint, succeeded)
    assert advice is not None
    # gpt-image-1-mini is of the same family and declared by the chain: advised.
    assert advice["cheapest_passing"]["params"]["model"] == "gpt-image-1-mini"
    assert advice["cheapest_passing"]["changes"]["model"] == "gpt-image-1-mini"
    nothing = cost_advice(relay_endpoint(), [])
    assert nothing is not None and nothing["cheapest_passing"] is None
    assert nothing["saving_per_1000_images_usd"] == 0
    assert describe(nothing).endswith("nothing cheaper passed in this run")
