"""What pytest_imagegen.cassettes relies on in vcrpy beyond its public API.

``ImagegenCassette`` subclasses ``vcr.cassette.Cassette`` and overrides or reads members
vcrpy does not document (``_load``, ``_save``, ``data``, ``play_counts``, ``dirty``,
``rewound``), and hands the cassette to ``CassettePatcherBuilder``. pyproject.toml pins the
vcrpy range these tests passed with; a vcrpy release that changes any of this fails here
first, with the member named.
"""

from __future__ import annotations

import collections
import inspect
from pathlib import Path

from vcr.cassette import Cassette
from vcr.patch import CassettePatcherBuilder
from vcr.record_mode import RecordMode


def test_the_constructor_takes_the_arguments_imagegen_passes() -> None:
    params = inspect.signature(Cassette.__init__).parameters
    for name in ("path", "serializer", "persister", "record_mode", "match_on", "skip_patchers"):
        assert name in params, name


def test_the_members_imagegen_overrides_or_reads_exist(tmp_path: Path) -> None:
    cassette = Cassette(tmp_path / "c.yaml", record_mode=RecordMode.NONE)
    assert cassette.data == [] and isinstance(cassette.data, list)
    assert isinstance(cassette.play_counts, collections.Counter)
    assert cassette.dirty is False and cassette.rewound is False
    for method in ("_load", "_save", "can_play_response_for", "play_response", "append"):
        assert callable(getattr(Cassette, method, None)), method
    assert "force" in inspect.signature(Cassette._save).parameters


def test_rewound_marks_a_loaded_cassette_that_once_may_not_add_to(tmp_path: Path) -> None:
    # ImagegenCassette._load sets rewound itself; vcrpy reads it to refuse recording.
    cassette = Cassette(tmp_path / "c.yaml", record_mode=RecordMode.ONCE)
    assert not cassette.write_protected
    cassette.rewound = True
    assert cassette.write_protected
    assert Cassette(tmp_path / "d.yaml", record_mode=RecordMode.NONE).write_protected


def test_the_patcher_builder_builds_context_managers_for_a_cassette(tmp_path: Path) -> None:
    cassette = Cassette(tmp_path / "c.yaml", record_mode=RecordMode.NONE)
    patchers = list(CassettePatcherBuilder(cassette).build())
    assert patchers
    assert all(hasattr(p, "__enter__") and hasattr(p, "__exit__") for p in patchers)
