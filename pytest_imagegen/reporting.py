"""The plugin's reporting on the controller: the hooks that feed the run's report collector
(each test's reports, ``DeviationWarning``s, progress lines while live requests go out),
and failures shown as the refusal's message.

Standard library and pytest only at import: the plugin imports this module in every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_imagegen.state import RunState

__all__ = ["Reporting", "shorten_own_error"]


def shorten_own_error(item: pytest.Item, exc: BaseException, report: pytest.TestReport) -> None:
    """Show a cassette or budget refusal as its message: the frames inside the SDK and the
    HTTP layer between the test and the refusal say nothing the message does not."""
    from pytest_imagegen.errors import BudgetExceededError, CassetteError

    style = item.config.getoption("tbstyle", "auto")
    if isinstance(exc, (CassetteError, BudgetExceededError)) and style in ("auto", "short"):
        report.longrepr = f"{type(exc).__name__}: {exc}"


class Reporting:
    """Feeds the report collector; registered on the controller only (xdist workers send
    their reports there), since ``pytest_runtest_logreport`` is not given the config."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.total = 0
        self.progress: Any = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.total = len(session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: Sequence[str]) -> None:
        self.total = max(self.total, len(ids))  # every worker collects the whole run

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from pytest_imagegen.testdata import PROPERTY

        state = self.state
        if state.collector is None:
            if getattr(report, PROPERTY, None) is None:
                return
            from pytest_imagegen.report import collector_for

            workers = getattr(state.config.option, "numprocesses", None)
            state.collector = collector_for(
                state.settings_or_none(),
                workers=workers,
                reference_options=state.reference_options_or_none(),
            )
        state.collector.add(report)
        self._progress(report)

    def pytest_warning_recorded(self, warning_message: Any, nodeid: str) -> None:
        # A DeviationWarning makes its (passing) test "warned" in the reports.
        from pytest_imagegen.verdict import DeviationWarning

        collector = self.state.collector
        if (
            nodeid
            and collector is not None
            and issubclass(warning_message.category, DeviationWarning)
        ):
            collector.warn(nodeid, str(warning_message.message))

    def _progress(self, report: pytest.TestReport) -> None:
        """A progress line now and then while live requests go out (see progress.py)."""
        import os

        from pytest_imagegen.progress import Progress, every_s
        from pytest_imagegen.report import imagegen_data

        if self.progress is None:
            self.progress = Progress(total=self.total, every=every_s(os.environ))
        self.progress.total = self.total
        self.progress.add(report.nodeid, imagegen_data(report), finished=report.when == "teardown")
        line = self.progress.line()
        reporter = self.state.config.pluginmanager.get_plugin("terminalreporter")
        if line is not None and reporter is not None and self.state.config.get_verbosity() > -2:
            reporter.write_line(line)
