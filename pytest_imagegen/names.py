"""The names users type: command-line options, the ini key, markers, record modes and the
variables of the embedded reference server.

Defined once, here, and imported by the plugin (at every pytest start-up), the settings,
the cassettes and the documentation test; so this module imports nothing.
"""

from __future__ import annotations

#: Command-line options (one group, one prefix).
OPTION = "--imagegen"
OPTION_ENDPOINT = "--imagegen-endpoint"
OPTION_RECORD_MODE = "--imagegen-record-mode"
OPTION_BUDGET = "--imagegen-budget"
OPTION_REPORT = "--imagegen-report"
OPTION_CONFIG = "--imagegen-config"
#: A one-off endpoint named ``cli`` (key from OPENAI_API_KEY); the same names as
#: ``pytest_imagegen.config.CLI_ENDPOINT_OPTIONS``.
OPTION_BASE_URL = "--imagegen-base-url"
OPTION_IMAGE_MODEL = "--imagegen-image-model"
OPTION_CHAT_MODEL = "--imagegen-chat-model"
#: ini key: the TOML file holding ``[tool.imagegen]`` (default: pyproject.toml in rootdir).
INI_CONFIG = "imagegen_config"

#: Markers, and the keyword arguments ``@pytest.mark.imagegen`` takes.
MARKER = "imagegen"
MARKER_LIVE = "imagegen_live"
MARKER_KEYS = ("endpoints", "profile", "record_mode")
MARKER_HELP = (
    f"{MARKER}(endpoints=[...], profile=..., record_mode=...): run this test only against the "
    "named endpoints / endpoints of that profile, with that cassette record mode.",
    f"{MARKER_LIVE}: needs a live endpoint; skipped when the endpoint is replayed from "
    "cassettes (record mode none, not loopback).",
)

#: Cassette record modes: none replays only; once records a missing cassette; new_episodes
#: records what a cassette lacks; all records everything again.
RECORD_MODES = ("none", "once", "new_episodes", "all")
#: The record modes in which requests may go out to a remote endpoint.
LIVE_RECORD_MODES = ("once", "new_episodes", "all")

#: Variables read for the embedded reference server (seconds, or ``low=0.5,high=2``; a
#: comma list of ``pytest_imagegen.reference.DEFECTS``).
ENV_REFERENCE_LATENCY = "IMAGEGEN_REFERENCE_LATENCY"
ENV_REFERENCE_DEFECTS = "IMAGEGEN_REFERENCE_DEFECTS"
