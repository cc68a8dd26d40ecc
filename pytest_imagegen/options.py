"""The command-line options and the ini key of pytest-imagegen, with their checks.

Standard library and pytest only: registered in every pytest run.
"""

from __future__ import annotations

import argparse
import math

import pytest

from pytest_imagegen.names import (
    INI_CONFIG,
    OPTION,
    OPTION_BASE_URL,
    OPTION_BUDGET,
    OPTION_CHAT_MODEL,
    OPTION_CONFIG,
    OPTION_ENDPOINT,
    OPTION_IMAGE_MODEL,
    OPTION_RECORD_MODE,
    OPTION_REPORT,
    RECORD_MODES,
)


def _budget_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an amount of USD; give a number >= 0, e.g. {OPTION_BUDGET}=1.50"
        )
    return value


def _endpoint_name(text: str) -> str:
    if "://" in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is a URL; {OPTION_ENDPOINT} takes endpoint names. For a one-off run "
            f"against a URL, use {OPTION_BASE_URL}={text} (with {OPTION_IMAGE_MODEL}=MODEL; "
            "the key is read from OPENAI_API_KEY)"
        )
    if not text or not all(c.islower() or c.isdigit() or c in "_-" for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an endpoint name (lower-case letters, digits, '_' and '-')"
        )
    return text


def add_options(parser: pytest.Parser) -> None:
    """Register the command-line options and the ini key."""
    group = parser.getgroup("imagegen", "image-generation endpoints (pytest-imagegen)")
    group.addoption(
        OPTION,
        action="store_true",
        dest="imagegen",
        default=False,
        help="collect and run the shipped conformance suite against the configured endpoints "
        "(the built-in reference endpoint when none is configured)",
    )
    group.addoption(
        OPTION_ENDPOINT,
        action="append",
        dest="imagegen_endpoints",
        default=None,
        metavar="NAME",
        type=_endpoint_name,
        help="run against this endpoint only (repeatable; default: all configured endpoints)",
    )
    group.addoption(
        OPTION_RECORD_MODE,
        dest="imagegen_record_mode",
        default=None,
        choices=RECORD_MODES,
        help="cassette record mode: none (replay only, the default), once, new_episodes, all",
    )
    group.addoption(
        OPTION_BUDGET,
        dest="imagegen_budget",
        default=None,
        metavar="USD",
        type=_budget_value,
        help="cap on the estimated spend of live requests in this run (default 1.00)",
    )
    group.addoption(
        OPTION_REPORT,
        dest="imagegen_report",
        default=None,
        metavar="PATH",
        help="write the run report to PATH (JSON; HTML when PATH ends in .html)",
    )
    group.addoption(
        OPTION_CONFIG,
        dest="imagegen_config",
        default=None,
        metavar="PATH",
        help="TOML file with the [tool.imagegen] settings (default: pyproject.toml in rootdir)",
    )
    group.addoption(
        OPTION_BASE_URL,
        dest="imagegen_base_url",
        default=None,
        metavar="URL",
        help="run against this OpenAI-compatible base URL as a one-off endpoint named 'cli' "
        "(no config needed; key from OPENAI_API_KEY)",
    )
    group.addoption(
        OPTION_IMAGE_MODEL,
        dest="imagegen_image_model",
        default=None,
        metavar="MODEL",
        help="the image model of the 'cli' endpoint (default: OPENAI_IMAGE_MODEL, else "
        "gpt-image-1.5)",
    )
    group.addoption(
        OPTION_CHAT_MODEL,
        dest="imagegen_chat_model",
        default=None,
        metavar="MODEL",
        help="the chat model of the 'cli' endpoint (enables the chat-side separation checks)",
    )
    parser.addini(
        INI_CONFIG,
        "TOML file with the [tool.imagegen] settings, relative to the ini file "
        "(default: pyproject.toml in rootdir)",
        default=None,
    )
