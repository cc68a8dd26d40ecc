"""Settings: the ``[tool.imagegen]`` file model, the environment, the command line, and the
one function that merges them, remembering where each value came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai

    from pytest_imagegen.profiles import Profile

RECORD_MODES = ("none", "once", "new_episodes", "all")

# Where a value came from, highest precedence first (shown in the report header).
SOURCE_CLI = "command line"
SOURCE_ENV = "environment"
SOURCE_FILE = "config file"
SOURCE_PROFILE = "profile default"
SOURCE_DEFAULT = "default"


@dataclass(frozen=True)
class Endpoint:
    """One resolved image endpoint: everything needed to call it and judge its answers."""

    name: str
    base_url: str
    image_model: str
    profile: Profile
    api_key: str = field(default="", repr=False)
    api_key_env: str | None = None
    chat_model: str | None = None
    timeout_s: float = 60.0
    deadline_s: float = 300.0
    max_retries: int = 0
    fallback: tuple[Mapping[str, Any], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    is_reference: bool = False
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every value that must never be written anywhere: the key and extra header values."""
        values = [self.api_key, *self.headers.values()]
        return tuple(v for v in values if v)

    def client(self, **overrides: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` bound to this endpoint (base URL, key, timeout, retries)."""
        import openai

        options: dict[str, Any] = {
            "base_url": self.base_url,
            "api_key": self.api_key or "sk-imagegen-placeholder",
            "timeout": self.timeout_s,
            "max_retries": self.max_retries,
            "default_headers": dict(self.headers) or None,
        }
        options.update(overrides)
        return openai.OpenAI(**options)
