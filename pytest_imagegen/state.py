"""What the plugin knows about one pytest run: whether ``--imagegen`` is on, the resolved
settings (or their error), the reference server's options, the report collector.

Kept in ``config.stash``; standard library and pytest only at import (the plugin imports
this module in every pytest run), the settings model is imported on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_imagegen.names import INI_CONFIG

if TYPE_CHECKING:
    from pytest_imagegen.config import Settings
    from pytest_imagegen.report import ReportCollector

__all__ = ["RunState", "run_state"]


class RunState:
    """What the plugin knows about this run (kept in ``config.stash``)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.enabled: bool = bool(config.getoption("imagegen", False))
        self._settings: Settings | None = None
        self._error: str | None = None
        self._reference_options: dict[str, Any] | None = None
        self.collector: ReportCollector | None = None
        self.deselected = 0
        self.report_path: Path | None = None

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def cli(self) -> dict[str, Any]:
        option = self.config.getoption
        return {
            "record_mode": option("imagegen_record_mode", None),
            "budget_usd": option("imagegen_budget", None),
            "report": option("imagegen_report", None),
            "endpoints": option("imagegen_endpoints", None),
            "config": option("imagegen_config", None),
            "base_url": option("imagegen_base_url", None),
            "image_model": option("imagegen_image_model", None),
            "chat_model": option("imagegen_chat_model", None),
        }

    def config_path(self) -> Path | None:
        from pytest_imagegen.config import config_file_path

        config = self.config
        return config_file_path(
            given=config.getoption("imagegen_config", None),
            ini=config.getini(INI_CONFIG) or None,
            invocation_dir=Path(config.invocation_params.dir),
            ini_dir=config.inipath.parent if config.inipath else config.rootpath,
        )

    def settings(self) -> Settings:
        """The resolved settings; ConfigError (with the config module's message) if invalid."""
        if self._settings is None:
            from pytest_imagegen.config import load_settings
            from pytest_imagegen.errors import ConfigError

            if self._error is not None:
                raise ConfigError(self._error)
            try:
                self._settings = load_settings(
                    cli=self.cli(),
                    env=os.environ,
                    rootdir=self.config.rootpath,
                    config_path=self.config_path(),
                )
            except ConfigError as exc:
                self._error = str(exc)
                raise
        return self._settings

    def settings_or_none(self) -> Settings | None:
        """:meth:`settings`, or None when they are invalid (the error was reported already)."""
        from pytest_imagegen.errors import ConfigError

        try:
            return self.settings()
        except ConfigError:
            return None

    def settings_or_fail(self) -> Settings:
        """:meth:`settings`, turning a configuration error into a test error with its text."""
        from pytest_imagegen.errors import ConfigError

        try:
            return self.settings()
        except ConfigError as exc:
            pytest.fail(f"pytest-imagegen configuration: {exc}", pytrace=False)

    def reference_options(self) -> dict[str, Any]:
        """Keyword arguments for the embedded ReferenceServer: ``reference`` settings (when the
        settings have them), overridden by the ``IMAGEGEN_REFERENCE_*`` variables."""
        if self._reference_options is None:
            from pytest_imagegen.config import reference_options

            self._reference_options = reference_options(self.settings(), os.environ)
        return dict(self._reference_options)

    def reference_options_or_none(self) -> dict[str, Any] | None:
        """:meth:`reference_options`, or None when the settings are invalid."""
        from pytest_imagegen.errors import ConfigError

        try:
            return self.reference_options()
        except ConfigError:
            return None

    def reference_options_or_fail(self) -> dict[str, Any]:
        """:meth:`reference_options`, a configuration error failing the test with its text."""
        from pytest_imagegen.errors import ConfigError

        try:
            return self.reference_options()
        except ConfigError as exc:
            pytest.fail(f"pytest-imagegen configuration: {exc}", pytrace=False)

    def narrowed(self) -> bool:
        """Whether this run left tests out on purpose (under xdist the controller collects
        nothing, so it looks at the selection options too)."""
        option = self.config.option
        return bool(
            self.deselected
            or getattr(option, "keyword", "")
            or getattr(option, "markexpr", "")
            or getattr(option, "deselect", None)
            or getattr(option, "lf", False)
            or getattr(option, "stepwise", False)
            or any("::" in arg for arg in self.config.args)
        )


_STATE = pytest.StashKey[RunState]()


def run_state(config: pytest.Config) -> RunState:
    """The run state of ``config`` (made on first use)."""
    state = config.stash.get(_STATE, None)
    if state is None:
        state = config.stash[_STATE] = RunState(config)
    return state
