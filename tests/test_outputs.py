"""What a run writes is checked at start-up (issue 10, findings 4 and 5): a report path or a
cassette folder that cannot be written is a usage error (exit code 4) before any request,
not a traceback after the whole run was spent."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_imagegen import names
from pytest_imagegen._files import write_problem


def _stopped_at_start(result: pytest.RunResult) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR == 4
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and "INTERNALERROR" not in output
    assert "collected" not in output  # stopped before collection: nothing was sent
    return output


def test_report_path_in_proc_or_a_directory_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = pytester.runpytest(names.OPTION, f"{names.OPTION_REPORT}=/proc/x.json")
    _stopped_at_start(result)
    result.stderr.fnmatch_lines(["ERROR: --imagegen-report = /proc/x.json: cannot write in /proc*"])

    folder = pytester.mkdir("reports")
    monkeypatch.setenv("IMAGEGEN_REPORT", str(folder))
    result = pytester.runpytest(names.OPTION)
    _stopped_at_start(result)
    result.stderr.fnmatch_lines([f"ERROR: IMAGEGEN_REPORT = {folder}: {folder} is a directory*"])


def test_cassette_dir_that_is_a_file_or_unwritable_stops_a_recording_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makefile(".txt", cassettes="not a folder")
    pytester.makepyprojecttoml('[tool.imagegen]\ncassette_dir = "cassettes.txt/sub"\n')
    result = pytester.runpytest(names.OPTION, f"{names.OPTION_RECORD_MODE}=all")
    output = _stopped_at_start(result)
    assert "cassettes.txt is a file, not a directory" in output
    result.stderr.fnmatch_lines(["*record mode 'all' writes cassettes there*"])

    monkeypatch.setenv("IMAGEGEN_CASSETTE_DIR", "/proc/imagegen-cassettes")
    result = pytester.runpytest(names.OPTION, f"{names.OPTION_RECORD_MODE}=once")
    _stopped_at_start(result)
    result.stderr.fnmatch_lines(["ERROR: IMAGEGEN_CASSETTE_DIR = /proc/imagegen-cassettes: *"])


def test_replay_does_not_need_a_writable_cassette_dir(pytester: pytest.Pytester) -> None:
    # Mode none only reads cassettes: a missing folder is each test's clear error, not a
    # start-up refusal (the embedded reference endpoint runs live on loopback).
    pytester.makepyprojecttoml('[tool.imagegen]\ncassette_dir = "/proc/imagegen-cassettes"\n')
    result = pytester.runpytest(names.OPTION, "-k", "image_model_is_image")
    assert result.ret == pytest.ExitCode.OK


def test_write_problem_probes_where_the_write_happens(tmp_path: Path) -> None:
    assert write_problem(tmp_path / "new" / "report.json", directory=False) is None
    assert (tmp_path / "new").is_dir() and not any((tmp_path / "new").iterdir())
    assert write_problem(tmp_path, directory=False) == f"{tmp_path} is a directory"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert (
        write_problem(blocker / "deeper", directory=True) == f"{blocker} is a file, not a directory"
    )
