"""The spend guard: estimated prices reserved against ``budget_usd`` before live requests.

Before a billable request goes out, its estimated price (the profile's price for its
quality, size and ``n``) is reserved; a request that would take the run past the cap is not
sent, and :class:`~pytest_imagegen.errors.BudgetExceededError` says by how much. A request
the endpoint refuses (HTTP 4xx/5xx) is not billed, so its reservation is given back.

The tally is shared by every process of one run (pytest-xdist workers): it lives in a small
JSON file in a directory all workers share, read and written under a
:class:`filelock.FileLock`. Amounts are kept in whole micro-dollars so that the sum of
reservations can be compared with the cap exactly.

Replayed requests cost nothing: callers reserve only for requests that really go out (see
:func:`event_hooks`, whose ``is_live`` decides per request).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_imagegen.errors import BudgetExceededError

if TYPE_CHECKING:
    from pytest_imagegen.config import Endpoint
    from pytest_imagegen.profiles import Profile

__all__ = [
    "BILLED_PATHS",
    "STATE_FILE",
    "Budget",
    "Reservation",
    "estimate_request",
    "estimate_responses",
    "event_hooks",
    "shared_state_dir",
]

#: Name of the shared state file inside the run's shared directory.
STATE_FILE = "imagegen-budget.json"

#: Request paths (suffixes) that are billed per image.
BILLED_PATHS = ("/images/generations", "/images/edits", "/images/variations")
#: Request paths billed per token: the separation checks' one-line chat requests.
TOKEN_BILLED_PATHS = ("/chat/completions", "/responses")
#: Estimate of one such chat request (a one-line prompt, at most 16 completion tokens) on the
#: priciest chat models: small, but not zero, so that ``budget_usd = 0`` sends none.
CHAT_REQUEST_USD = 0.001
#: The Responses ``image_generation`` tool's model when a request names none (OpenAI's
#: default for the tool, as the reference server serves it).
RESPONSES_TOOL_MODEL = "gpt-image-1.5"

_MICRO = 1_000_000
# The key under which a request carries its reservation from the request hook to the
# response hook (httpx2 request extensions travel with the request object).
_EXTENSION = "imagegen_reservation"


def _micros(usd: float) -> int:
    return round(usd * _MICRO)


def _usd(micros: int) -> float:
    return micros / _MICRO


def _money(usd: float) -> str:
    return f"${usd:.4f}" if usd < 1 else f"${usd:.2f}"


@dataclass(frozen=True)
class Reservation:
    """One accepted reservation (give it back with :meth:`Budget.release`)."""

    amount_usd: float
    label: str = ""


class Budget:
    """The run's spend guard: a cap, and the estimated spend reserved against it so far.

    ``state_dir`` is a directory shared by all processes of the run (pytest-xdist workers);
    None keeps the tally in this process only (for use outside pytest).
    """

    def __init__(self, cap_usd: float, state_dir: Path | str | None = None) -> None:
        if cap_usd < 0:
            raise ValueError(f"budget cap must be >= 0, not {cap_usd!r}")
        self.cap_usd = float(cap_usd)
        self._cap = _micros(cap_usd)
        self._thread_lock = threading.Lock()
        self._memory = {"spent": 0, "reservations": 0, "refused": 0, "extra": 0, "charges": 0}
        self.path: Path | None = None
        self._file_lock: Any = None
        if state_dir is not None:
            # Nothing is created until the first reservation: a run that sends nothing
            # billable (a replay) writes no file.
            self.path = Path(state_dir) / STATE_FILE

    def __repr__(self) -> str:
        return f"Budget(cap={_money(self.cap_usd)}, spent={_money(self.spent())})"

    # ------------------------------------------------------------------ estimates

    @staticmethod
    def estimate(
        profile: Profile, *, quality: str | None = None, size: str | None = None, n: int = 1
    ) -> float:
        """The estimated price in USD of ``n`` images at this quality and size."""
        return _price(profile, quality=quality, size=size, n=n)

    # ------------------------------------------------------------------ the tally

    def spent(self) -> float:
        """Estimated spend of the whole run so far (all workers), in USD."""
        return _usd(self._update(lambda state: None)["spent"])

    def remaining(self) -> float:
        """What is left of the cap, in USD (never negative)."""
        return max(0.0, self.cap_usd - self.spent())

    def reserve(self, amount_usd: float, *, label: str = "") -> Reservation:
        """Reserve ``amount_usd`` for a request about to be sent.

        Raises :class:`BudgetExceededError` (with ``amount_usd``, ``remaining_usd`` and
        ``cap_usd`` attributes) and reserves nothing when the amount would take the run's
        spend past the cap.
        """
        amount = max(0, _micros(amount_usd))
        refused: dict[str, int] = {}

        def apply(state: dict[str, int]) -> None:
            if state["spent"] + amount > self._cap:
                state["refused"] += 1
                refused["remaining"] = max(0, self._cap - state["spent"])
                return
            state["spent"] += amount
            state["reservations"] += 1

        self._update(apply)
        if refused:
            raise self._exceeded(amount_usd, _usd(refused["remaining"]), label)
        return Reservation(_usd(amount), label)

    def charge(self, amount_usd: float) -> None:
        """Add what an answer cost beyond its reservation (an endpoint that returned more
        images than were asked for). Never refused: the money is spent already, so this may
        take the spend past the cap, which ``cost.within_budget`` reports."""
        amount = max(0, _micros(amount_usd))
        if not amount:
            return

        def apply(state: dict[str, int]) -> None:
            state["spent"] += amount
            state["extra"] += amount
            state["charges"] += 1

        self._update(apply)

    def release(self, reservation: Reservation) -> None:
        """Give a reservation back (the request was refused, so it is not billed)."""
        amount = _micros(reservation.amount_usd)

        def apply(state: dict[str, int]) -> None:
            state["spent"] = max(0, state["spent"] - amount)

        self._update(apply)

    def state(self) -> dict[str, float | int]:
        """The tally as plain numbers (spent, reservations, refused, cap), for reports."""
        raw = self._update(lambda state: None)
        return {
            "cap_usd": self.cap_usd,
            "spent_usd": _usd(raw["spent"]),
            "reservations": raw["reservations"],
            "refused": raw["refused"],
            "extra_usd": _usd(raw["extra"]),
            "charges": raw["charges"],
        }

    def _exceeded(self, amount: float, remaining: float, label: str) -> BudgetExceededError:
        what = f"{label} " if label else "this request "
        exc = BudgetExceededError(
            f"budget: {what}would spend {_money(amount)}, {_money(remaining)} of "
            f"{_money(self.cap_usd)} left; raise --imagegen-budget (or budget_usd in "
            f"[tool.imagegen]) to allow it. The request was not sent."
        )
        exc.amount_usd = amount  # type: ignore[attr-defined]
        exc.remaining_usd = remaining  # type: ignore[attr-defined]
        exc.cap_usd = self.cap_usd  # type: ignore[attr-defined]
        return exc

    def _update(self, apply: Callable[[dict[str, int]], None]) -> dict[str, int]:
        """Read the state, apply a change, write it back; atomic across threads/processes.

        A change that changes nothing (a read) takes no file lock and writes nothing: the
        file is only ever replaced whole, so reading it without the lock is safe.
        """
        with self._thread_lock:
            if self.path is None:
                apply(self._memory)
                return dict(self._memory)
            state = self._read()
            before = dict(state)
            apply(state)
            if state == before:
                return state
            with self._lock():
                state = self._read()
                apply(state)
                self._write(state)
                return state

    def _lock(self) -> Any:
        if self._file_lock is None:
            from filelock import FileLock

            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file_lock = FileLock(str(self.path) + ".lock")
        return self._file_lock

    def _read(self) -> dict[str, int]:
        assert self.path is not None
        state = {"spent": 0, "reservations": 0, "refused": 0, "extra": 0, "charges": 0}
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return state
        except (OSError, ValueError) as exc:
            # Written atomically under the lock, so this only happens if someone else
            # wrote the file: refuse rather than guess at what was spent.
            raise BudgetExceededError(
                f"budget: the shared spend file {self.path} is unreadable ({exc}); delete it "
                f"and rerun."
            ) from exc
        for key in state:
            value = loaded.get(f"{key}_micros" if key in ("spent", "extra") else key, 0)
            state[key] = int(value) if isinstance(value, int) else 0
        return state

    def _write(self, state: Mapping[str, int]) -> None:
        assert self.path is not None
        document = {
            "cap_micros": self._cap,
            "spent_micros": state["spent"],
            "reservations": state["reservations"],
            "refused": state["refused"],
            "extra_micros": state["extra"],
            "charges": state["charges"],
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(document), encoding="utf-8")
        os.replace(tmp, self.path)


def shared_state_dir(config: Any) -> Path | None:
    """Where the xdist workers of a pytest run (``config``) share the tally: a folder in the
    controller's basetemp, which holds each worker's (``--basetemp`` as xdist sets it) and
    exists already. None in a single process: the tally stays in memory, and a run that
    reserves nothing writes no file."""
    if not hasattr(config, "workerinput"):
        return None
    basetemp = getattr(config.option, "basetemp", None)
    if basetemp:
        return Path(basetemp).resolve().parent / "imagegen-budget"
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return None
    return Path(factory.getbasetemp()).parent / "imagegen-budget"


def _price(profile: Profile, *, quality: str | None, size: str | None, n: int) -> float:
    try:
        return float(profile.price(quality=quality, size=size, n=n))
    except (KeyError, ValueError, TypeError):
        # A quality or size the profile has no price for (a request the endpoint should
        # refuse, or "auto"): estimate with the profile's own defaults instead.
        try:
            return float(profile.price(n=n))
        except (KeyError, ValueError, TypeError):
            return 0.0


def estimate_request(profile: Profile, body: Mapping[str, Any]) -> float:
    """The estimated price of an Images API request body for ``profile``.

    Lenient on purpose: values the profile does not accept are priced at its defaults, and
    an ``n`` outside the profile's range counts as one image, so an invalid request (which a
    conforming endpoint refuses, and does not bill) is not estimated at an absurd figure.
    """
    n_raw = body.get("n", 1)
    n = n_raw if isinstance(n_raw, int) and not isinstance(n_raw, bool) else 1
    if not 1 <= n <= max(1, int(getattr(profile, "n_max", 1) or 1)):
        n = 1
    quality = body.get("quality")
    size = body.get("size")
    quality = quality if isinstance(quality, str) and quality in profile.qualities else None
    size = size if isinstance(size, str) and _supports_size(profile, size) else None
    return _price(profile, quality=quality, size=size, n=n)


def estimate_responses(
    body: Mapping[str, Any],
    *,
    profile_for: Callable[[str | None], Profile | None] | None = None,
) -> float:
    """The estimated price of a ``POST /responses`` body: the chat request, plus, when it
    offers the ``image_generation`` tool, one image priced like a generation with the
    tool's ``model`` (default :data:`RESPONSES_TOOL_MODEL`), ``quality`` and ``size``.

    ``profile_for(model)`` resolves the tool's model (default: the built-in profiles); a
    model with no known profile is priced as the default tool model.
    """
    from pytest_imagegen.profiles import get_profile, resolve_profile

    amount = CHAT_REQUEST_USD
    tools = body.get("tools")
    tool = next(
        (
            t
            for t in (tools if isinstance(tools, list) else [])
            if isinstance(t, Mapping) and t.get("type") == "image_generation"
        ),
        None,
    )
    if tool is None:
        return amount
    model = tool.get("model")
    model = model if isinstance(model, str) and model else RESPONSES_TOOL_MODEL
    profile = profile_for(model) if profile_for is not None else None
    if profile is None:
        profile = resolve_profile(model) or get_profile(RESPONSES_TOOL_MODEL)
    # The tool makes one image per call; its quality and size price it as a generation.
    image = estimate_request(profile, {"quality": tool.get("quality"), "size": tool.get("size")})
    return amount + image


def _supports_size(profile: Profile, size: str) -> bool:
    try:
        return bool(profile.supports_size(size))
    except (KeyError, ValueError, TypeError):
        return False


def _request_json(request: Any) -> Mapping[str, Any] | None:
    try:
        content = request.content
    except Exception:  # a body not read yet: a multipart upload (an edit) is read to price it
        if "multipart/form-data" not in request.headers.get("content-type", "").lower():
            return None
        try:
            content = request.read()  # httpx2 keeps the bytes, so the body is still sent
        except Exception:
            return None
    if not content:
        return None
    content_type = request.headers.get("content-type", "")
    if "multipart/form-data" in content_type.lower():
        # An edit or variation: its text fields price it (quality, size, n) like a JSON body.
        return _form_fields(content, content_type) or None
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _form_fields(content: bytes, content_type: str) -> dict[str, Any]:
    """The text fields of a multipart body, parsed as the API reads them (``n="2"`` -> 2)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    from pytest_imagegen.request_builder import coerce_form

    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = BytesParser(policy=HTTP).parsebytes(head + content)
    fields: dict[str, str] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename() is not None:
            continue  # a file: it does not change the price
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            fields[name] = payload.decode("utf-8", "replace")
    return coerce_form(fields)


def excess_price(profile: Profile, body: Mapping[str, Any], returned: int) -> float:
    """What ``returned`` images cost beyond the estimate of the request ``body``, which
    asked for fewer (0.0 when no more were returned than asked for)."""
    asked = body.get("n", 1)
    asked = asked if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0 else 1
    if returned <= asked:
        return 0.0
    return estimate_request(profile, {**body, "n": 1}) * (returned - asked)


def is_billed(endpoint: Endpoint, request: Any) -> bool:
    """Whether ``request`` to ``endpoint`` is billed, per image or per token (the reference
    server is free, and so is a gateway in front of one)."""
    if endpoint.is_reference or endpoint.upstream is not None or request.method.upper() != "POST":
        return False
    return str(request.url.path).rstrip("/").endswith(BILLED_PATHS + TOKEN_BILLED_PATHS)


def event_hooks(
    budget: Budget | None,
    endpoint: Endpoint,
    *,
    is_live: Callable[[Any], bool] = lambda request: True,
    on_cost: Callable[[float], None] | None = None,
    profile_for: Callable[[str | None], Profile | None] | None = None,
    replayed: Callable[[], int] | None = None,
) -> dict[str, list[Callable[..., None]]]:
    """httpx2 ``event_hooks`` that make a client obey ``budget`` (None: only tally the cost).

    The request hook reserves the estimated price of each billable request to ``endpoint``
    for which ``is_live(request)`` is true (so replayed requests cost nothing) and raises
    :class:`BudgetExceededError` instead of sending one that would pass the cap. The
    response hook gives the reservation back when the endpoint refused the request (status
    >= 400) and otherwise reports the amount to ``on_cost``. ``profile_for(model)`` prices a
    request naming another model than the endpoint's (default: the endpoint's profile).

    ``replayed()``, when given, counts answers replayed from a cassette so far: for a
    cassette that both replays and records (``new_episodes``), a request whose answer turns
    out to be replayed gets its reservation back.
    """

    def tool_profile(model: str | None) -> Profile | None:
        # The endpoint's own image model keeps its configured (possibly custom) profile.
        if model == endpoint.image_model:
            return endpoint.profile
        return profile_for(model) if profile_for is not None else None

    def on_request(request: Any) -> None:
        if not is_billed(endpoint, request) or not is_live(request):
            return
        body = _request_json(request) or {}
        model = body.get("model")
        profile = None
        if profile_for is not None and isinstance(model, str) and model != endpoint.image_model:
            profile = profile_for(model)
        path = str(request.url.path).rstrip("/")
        if path.endswith("/responses"):
            amount = estimate_responses(body, profile_for=tool_profile)
        elif path.endswith(TOKEN_BILLED_PATHS):
            amount = CHAT_REQUEST_USD
        else:
            amount = estimate_request(profile or endpoint.profile, body)
        if budget is None:
            reservation = Reservation(amount)
        else:
            label = f"POST {request.url.path} to endpoint {endpoint.name!r}"
            reservation = budget.reserve(amount, label=label)
        request.extensions[_EXTENSION] = (budget, reservation, replayed() if replayed else 0)

    def on_response(response: Any) -> None:
        held = response.request.extensions.pop(_EXTENSION, None)
        if held is None:
            return
        owner, reservation, replays_before = held
        if response.status_code >= 400 or (replayed is not None and replayed() > replays_before):
            if owner is not None:
                owner.release(reservation)
        elif on_cost is not None:
            on_cost(reservation.amount_usd)

    return {"request": [on_request], "response": [on_response]}
