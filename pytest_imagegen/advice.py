"""Cost advice per endpoint: what an image costs at the configured parameters, and the
cheapest parameters that this very run showed to work.

"Configured" is what the app sends when it says nothing else: the profile's default quality
and size for the endpoint's ``image_model`` ("auto" is priced at the dearest option, as the
budget guard does). The candidates are the parameters of the image requests that succeeded
in tests that passed, so the advice never suggests something the endpoint was not seen to
serve: another quality, size or output format, or another model of the same family that the
endpoint declares (its ``image_model`` or a fallback step's ``model``). Prices are the
profiles' estimates (:meth:`pytest_imagegen.profiles.Profile.price`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_imagegen.config import Endpoint
    from pytest_imagegen.profiles import Profile

#: The saving is projected over this many images.
PER_IMAGES = 1000

_SHOWN = ("model", "quality", "size", "output_format")


def declared_models(endpoint: Endpoint) -> list[str]:
    """The image models the endpoint declares: ``image_model``, then fallback steps' models."""
    models = [endpoint.image_model]
    for step in endpoint.fallback:
        model = step.get("model")
        if isinstance(model, str) and model not in models:
            models.append(model)
    return models


def _profile_of(
    model: str, endpoint: Endpoint, custom: Mapping[str, Profile] | None
) -> Profile | None:
    if model == endpoint.image_model:
        return endpoint.profile
    from pytest_imagegen.profiles import resolve_profile

    try:
        return resolve_profile(model, custom=custom)
    except Exception:  # an unknown explicit profile: no advice for that model
        return None


def _price(profile: Profile, params: Mapping[str, Any]) -> float | None:
    quality = params.get("quality")
    size = params.get("size")
    try:
        return float(
            profile.price(
                quality=quality if isinstance(quality, str) else None,
                size=size if isinstance(size, str) else None,
            )
        )
    except (ValueError, TypeError, KeyError):
        return None


def configured_params(endpoint: Endpoint) -> dict[str, Any]:
    """The parameters an image request gets when the app sets none: the profile defaults."""
    profile = endpoint.profile
    params: dict[str, Any] = {"model": endpoint.image_model}
    if profile.qualities:
        params["quality"] = profile.default_quality
    params["size"] = profile.default_size
    if profile.output_formats:
        params["output_format"] = "png"
    return params


def cost_advice(
    endpoint: Endpoint,
    succeeded: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    custom_profiles: Mapping[str, Profile] | None = None,
) -> dict[str, Any] | None:
    """The advice for one endpoint, JSON-ready; None when its profile has no prices.

    ``succeeded`` holds ``(nodeid, params)`` for each image request that succeeded in a
    passed test of this endpoint (``params``: model, quality, size, output_format, n).
    """
    profile = endpoint.profile
    configured = configured_params(endpoint)
    configured_cost = _price(profile, configured)
    if configured_cost is None or not profile.prices:
        return None
    declared = declared_models(endpoint)
    best: tuple[float, int, dict[str, Any], list[str]] | None = None
    candidates: dict[tuple[tuple[str, Any], ...], list[str]] = {}
    for nodeid, params in succeeded:
        model = params.get("model") if isinstance(params.get("model"), str) else None
        model = model or endpoint.image_model
        if model not in declared:
            continue  # a model the app does not declare is no advice for it
        own = _profile_of(model, endpoint, custom_profiles)
        if own is None or own.family != profile.family:
            continue
        shown = {k: params[k] for k in _SHOWN if k in params}
        shown["model"] = model
        for key in ("quality", "size"):  # left out: the model's default applied
            if key not in shown and key in configured:
                shown[key] = own.default_quality if key == "quality" else own.default_size
        candidates.setdefault(tuple(sorted(shown.items())), []).append(nodeid)
    for pairs, nodeids in candidates.items():
        shown = dict(pairs)
        own = _profile_of(shown["model"], endpoint, custom_profiles)
        price = _price(own, shown) if own is not None else None
        if price is None:
            continue
        changes = sum(1 for k, v in shown.items() if configured.get(k) != v)
        rank = (price, changes)
        if best is None or rank < (best[0], best[1]):
            best = (price, changes, shown, sorted(set(nodeids)))
    cheapest = None
    saving = 0.0
    if best is not None and best[0] < configured_cost:
        price, _, shown, nodeids = best
        changed = {k: v for k, v in shown.items() if configured.get(k) != v}
        cheapest = {
            "params": shown,
            "changes": changed,
            "cost_per_image_usd": round(price, 6),
            "passed_in": nodeids[:5],
        }
        saving = round((configured_cost - price) * PER_IMAGES, 4)
    return {
        "configured": {"params": configured, "cost_per_image_usd": round(configured_cost, 6)},
        "cheapest_passing": cheapest,
        "saving_per_1000_images_usd": saving,
        "declared_models": declared,
    }


def describe(advice: Mapping[str, Any]) -> str:
    """One sentence for the terminal and the HTML report."""
    configured = advice["configured"]
    text = f"${configured['cost_per_image_usd']:.3f}/image at {format_params(configured['params'])}"
    cheapest = advice.get("cheapest_passing")
    if not cheapest:
        return text + "; nothing cheaper passed in this run"
    return (
        f"{text}; {format_params(cheapest['changes'])} passed the same checks at "
        f"${cheapest['cost_per_image_usd']:.3f}/image: saves "
        f"${advice['saving_per_1000_images_usd']:.2f} per {PER_IMAGES:,} images"
    )


def format_params(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) or "(defaults)"
