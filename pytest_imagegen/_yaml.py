"""Reading and writing cassette YAML quickly, with the results of PyYAML's safe loader.

Loading a cassette is most of what a replayed test costs. libyaml (``yaml.CSafeLoader``)
parses in C but still builds every node and resolves every plain scalar in Python;
:func:`load` reads libyaml's events and builds the plain dicts, lists and strings a cassette
holds directly, about twice as fast. Whatever it is not sure to read exactly as the safe
loader would (anchors, aliases, explicit tags such as ``!!binary``, merge keys, plain
scalars other than strings, decimal integers, ``true``/``false`` and null) sends the whole
document to the safe loader instead. Without libyaml, the pure-Python safe loader is used.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import ScalarNode

try:
    import yaml._yaml as _libyaml
    from yaml import CSafeDumper as SafeDumper
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeDumper, SafeLoader  # type: ignore[assignment]

    _libyaml = None  # type: ignore[assignment]

#: libyaml's parser (None without libyaml).
CParser: Any = getattr(_libyaml, "CParser", None)

__all__ = ["WITH_LIBYAML", "SafeDumper", "SafeLoader", "load"]

WITH_LIBYAML = CParser is not None

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_FLOAT = "tag:yaml.org,2002:float"
# Plain decimal floats as the dumper writes them (latencies); YAML 1.1's other float forms
# (1_000.5, sexagesimal, .inf, .nan) are left to the safe loader.
_DECIMAL_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_RESOLVER = yaml.resolver.Resolver()
_KEY = object()  # "the next scalar is a key" marker on the stack of open mappings


class _NotSimple(Exception):
    """The document uses YAML the fast path leaves to the safe loader."""


#: Plain scalars already resolved: cassettes repeat the same header names, methods and
#: values, and resolving one (the resolver's regular expressions) costs more than reading it.
_RESOLVED: dict[str, Any] = {}
_RESOLVED_MAX = 4096


def _plain(value: str) -> Any:
    """A plain (unquoted) scalar as the safe loader reads it, or _NotSimple."""
    try:
        return _RESOLVED[value]
    except KeyError:
        pass
    resolved = _resolve(value)
    if len(_RESOLVED) < _RESOLVED_MAX:
        _RESOLVED[value] = resolved
    return resolved


def _resolve(value: str) -> Any:
    tag = _RESOLVER.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
    if tag == _STR:
        return value
    if tag == _NULL:
        return None
    if tag == _BOOL and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if tag == _INT and _DECIMAL.match(value):
        return int(value)
    if tag == _FLOAT and _DECIMAL_FLOAT.match(value):
        return float(value)
    raise _NotSimple  # yes/no/on/off, floats, octal, hex, timestamps, ...


def _fast(text: str) -> Any:
    assert CParser is not None
    parser = CParser(text)
    try:
        if type(parser.get_event()) is not StreamStartEvent:
            raise _NotSimple
        if type(parser.get_event()) is not DocumentStartEvent:
            raise _NotSimple  # an empty stream
        containers: list[Any] = []
        keys: list[Any] = []
        document: Any = None
        while True:
            event: Any = parser.get_event()
            kind = type(event)
            value: Any
            if kind is ScalarEvent:
                if event.anchor is not None or event.tag not in (None, "!", _STR):
                    raise _NotSimple
                value = event.value if (event.style or event.tag) else _plain(event.value)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                if event.anchor is not None or not event.implicit:
                    raise _NotSimple
                containers.append({} if kind is MappingStartEvent else [])
                keys.append(_KEY)
                continue
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                value = containers.pop()
                keys.pop()
            elif kind is DocumentEndEvent:
                break
            else:  # an alias
                raise _NotSimple
            if not containers:
                document = value
                continue
            top = containers[-1]
            if type(top) is list:
                top.append(value)
            elif keys[-1] is _KEY:
                if isinstance(value, (dict, list)) or value == "<<":
                    raise _NotSimple  # complex keys, merge keys
                keys[-1] = value
            else:
                top[keys[-1]] = value
                keys[-1] = _KEY
        if type(parser.get_event()) is not StreamEndEvent:
            raise _NotSimple  # several documents: the safe loader says what is wrong
        return document
    finally:
        parser.dispose()


def load(text: str) -> Any:
    """``yaml.load(text, Loader=SafeLoader)``, faster for what cassettes hold."""
    if CParser is not None:
        try:
            return _fast(text)
        except _NotSimple:
            pass
        except yaml.YAMLError:
            pass  # parsed again below, so that the error is the safe loader's own
    return yaml.load(text, Loader=SafeLoader)
