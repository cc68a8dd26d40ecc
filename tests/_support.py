"""What several test modules share: the ground-truth files in ``tests/data``, validators
for the official OpenAPI schemas, and the reference-server client used across modules."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import yaml

if TYPE_CHECKING:
    # jsonschema is a test extra: conftest imports this module even for `pytest --imagegen`
    # on a plain install, so it is imported only when a validator is built.
    from jsonschema import Draft202012Validator
    from referencing import Registry

# Copies of the ground truth, with provenance in tests/data/README.md.
DATA = Path(__file__).resolve().parent / "data"
SPEC = DATA / "openai-images-openapi.yaml"
REAL_ERRORS = DATA / "real-errors.json"
LITELLM_ERRORS = DATA / "litellm-errors.json"
CATEGORY_TABLE = DATA / "error-categories.md"
_SPEC_URI = "urn:openai-images-openapi"

#: The key the reference-server tests configure.
REFERENCE_KEY = "sk-test-reference-key-0123456789abcdef"

#: One HTTP client for all tests: creating an httpx2 client costs ~70 ms (TLS setup).
HTTP = httpx2.Client(timeout=30)


def relay_endpoint(**changes: Any) -> Any:
    """A remote-looking gpt-image-1 endpoint named ``relay`` (nothing is ever sent to it)."""
    from pytest_imagegen.config import Endpoint
    from pytest_imagegen.profiles import get_profile

    values: dict[str, Any] = {
        "name": "relay",
        "base_url": "https://relay.example.invalid/v1",
        "image_model": "gpt-image-1",
        "profile": get_profile("gpt-image-1"),
    }
    values.update(changes)
    return Endpoint(**values)


def real_error_cases() -> list[dict[str, Any]]:
    """The cases of ``real-errors.json``: real bodies with the category each must get."""
    return json.loads(REAL_ERRORS.read_text(encoding="utf-8"))["cases"]


def litellm_error_cases() -> list[dict[str, Any]]:
    """The cases of ``litellm-errors.json``: what a real LiteLLM proxy answered."""
    return json.loads(LITELLM_ERRORS.read_text(encoding="utf-8"))["cases"]


def _nullable(node: Any) -> Any:
    """OpenAPI's ``nullable: true`` (a 3.0 keyword the 3.1 file still uses) as JSON Schema."""
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False) is True:
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(x) for x in node]
    return node


@functools.cache
def _registry() -> Registry:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    document = _nullable(yaml.safe_load(SPEC.read_text(encoding="utf-8")))
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    return Registry().with_resource(_SPEC_URI, resource)


@functools.cache
def spec_validator(schema: str) -> Draft202012Validator:
    """A validator for one of the spec's ``components/schemas`` (e.g. ``ImagesResponse``)."""
    from jsonschema import Draft202012Validator

    ref = {"$ref": f"{_SPEC_URI}#/components/schemas/{schema}"}
    return Draft202012Validator(ref, registry=_registry())
