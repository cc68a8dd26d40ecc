"""The decision tables: code/type tokens, substring rules, message patterns (English and
Chinese relay texts) and statuses, each mapped to a (category, detail tag)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pytest_imagegen.classify.categories import (
    AUTHENTICATION,
    CONTENT_POLICY,
    INVALID_REQUEST,
    MODEL_NOT_FOUND,
    NETWORK,
    PERMISSION,
    QUOTA,
    RATE_LIMIT,
    SERVER,
    TIMEOUT,
)
from pytest_imagegen.errors import Category

# ---------------------------------------------------------------------------
# Decision tables
# ---------------------------------------------------------------------------


_ONE_API_TYPES = frozenset({"one_api_error", "new_api_error", "shell_api_error", "upstream_error"})
_LITELLM_TYPES = frozenset({"throttling_error", "auth_error", "budget_exceeded"})


def _token(value: str) -> str:
    """``DeploymentNotFound`` / ``contentFilter`` / ``rate-limit`` -> snake_case."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", value.strip())
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


_AZURE_CODES = frozenset(
    {"deployment_not_found", "content_filter", "responsible_ai_policy_violation",
     "operation_not_supported", "invalid_payload", "too_many_requests"}
)  # fmt: skip

# Exact code/type tokens (after ``_token``) -> (category, detail tag).
_CODE_TABLE: Mapping[str, tuple[Category, str]] = {
    # authentication
    **dict.fromkeys(
        ("invalid_api_key", "invalid_authentication", "incorrect_api_key", "unauthorized",
         "unauthenticated", "authentication_error", "auth_error", "authentication_type_disabled",
         "invalid_token", "token_expired", "expired_token", "missing_api_key", "no_api_key",
         "invalid_subscription_key", "account_deactivated", "invalid_organization",
         "no_such_organization", "invalid_auth", "invalid_x_api_key", "api_key_invalid",
         "api_key_expired", "invalid_access_token"),
        (AUTHENTICATION, ""),
    ),
    # permission
    **dict.fromkeys(
        ("permission_denied", "permission_error", "insufficient_permissions", "forbidden",
         "access_denied", "ip_not_authorized", "model_not_allowed", "user_banned"),
        (PERMISSION, ""),
    ),
    **dict.fromkeys(
        ("unsupported_country_region_territory", "unsupported_country", "unsupported_region",
         "country_not_supported", "region_not_supported"),
        (PERMISSION, "region"),
    ),
    "organization_not_verified": (PERMISSION, "verify"),
    "no_db_connection": (AUTHENTICATION, "gateway_no_db"),
    # quota (substrings below catch the relay variants)
    "insufficient_quota": (QUOTA, ""),
    "billing_hard_limit_reached": (QUOTA, "billing"),
    "billing_not_active": (QUOTA, "billing"),
    "budget_exceeded": (QUOTA, "budget"),
    "payment_required": (QUOTA, ""),
    "insufficient_balance": (QUOTA, ""),
    "insufficient_credits": (QUOTA, ""),
    "insufficient_funds": (QUOTA, ""),
    # rate limit (OpenAI's 429 types are "requests" and "tokens")
    **dict.fromkeys(
        ("rate_limit_exceeded", "rate_limit_error", "rate_limited", "rate_limit",
         "throttling_error", "throttled", "too_many_requests", "requests", "tokens",
         "resource_exhausted"),
        (RATE_LIMIT, ""),
    ),
    # timeout
    **dict.fromkeys(
        ("timeout", "request_timeout", "gateway_timeout", "timeout_error", "upstream_timeout",
         "deadline_exceeded", "read_timeout", "connect_timeout"),
        (TIMEOUT, ""),
    ),
    # network
    **dict.fromkeys(
        ("connection_error", "api_connection_error", "upstream_connection_error",
         "do_request_failed", "connection_refused", "connection_reset", "dns_error", "ssl_error"),
        (NETWORK, ""),
    ),
    # model
    **dict.fromkeys(
        ("model_not_found", "model_not_available", "unsupported_model", "model_not_supported",
         "invalid_model", "model_deprecated", "model_retired", "not_found_model"),
        (MODEL_NOT_FOUND, ""),
    ),
    "deployment_not_found": (MODEL_NOT_FOUND, "deployment"),
    "operation_not_supported": (MODEL_NOT_FOUND, "wrong_kind"),
    **dict.fromkeys(
        ("no_available_channel", "get_channel_failed", "channel_not_found",
         "model_price_error"),
        (MODEL_NOT_FOUND, "relay_channel"),
    ),
    # invalid request
    **dict.fromkeys(
        ("invalid_value", "invalid_size", "unknown_parameter", "unsupported_value",
         "unsupported_parameter", "missing_required_parameter", "integer_above_max_value",
         "integer_below_min_value", "invalid_type", "string_above_max_length",
         "string_below_min_length", "invalid_request", "bad_request", "invalid_parameter",
         "invalid_argument", "invalid_image", "invalid_image_file", "invalid_image_format",
         "image_too_large", "context_length_exceeded", "unsupported_params", "invalid_json",
         "validation_error", "invalid_payload", "array_above_max_length", "empty_array",
         "invalid_url", "unsupported_country_code"),
        (INVALID_REQUEST, ""),
    ),
    **dict.fromkeys(
        ("payload_too_large", "request_too_large", "function_payload_too_large",
         "request_entity_too_large"),
        (INVALID_REQUEST, "too_large"),
    ),
    # content policy
    **dict.fromkeys(
        ("content_policy_violation", "moderation_blocked", "content_filter",
         "responsible_ai_policy_violation", "image_generation_user_error",
         "content_policy_violation_error", "safety_violation", "sensitive_words_detected",
         "invalid_prompt", "content_policy", "user_error_moderation"),
        (CONTENT_POLICY, ""),
    ),
}  # fmt: skip

# Tokens that only say "an error happened" at a given layer: consulted after the status.
_WEAK_TOKENS: Mapping[str, Category] = {
    "invalid_request_error": INVALID_REQUEST,
    "server_error": SERVER,
    "internal_server_error": SERVER,
    "internal_error": SERVER,
    "internal": SERVER,
    "api_error": SERVER,
    "service_unavailable": SERVER,
    "unavailable": SERVER,
    "overloaded": SERVER,
    "overloaded_error": SERVER,
    "engine_overloaded": SERVER,
    "bad_gateway": SERVER,
    "upstream_error": SERVER,
    "bad_response_status_code": SERVER,
    "bad_response": SERVER,
}

# Substring rules for codes not in the table, in order.
_CODE_SUBSTRINGS: tuple[tuple[Category, tuple[str, ...]], ...] = (
    (CONTENT_POLICY, ("content_polic", "moderation", "content_filter", "safety", "sensitive")),
    (QUOTA, ("quota", "billing", "budget", "balance", "credit")),
    (RATE_LIMIT, ("rate_limit", "ratelimit", "throttl", "too_many")),
    (TIMEOUT, ("timeout", "timed_out")),
    (MODEL_NOT_FOUND, ("model_not", "deployment_not", "no_channel", "no_available_channel")),
    (AUTHENTICATION, ("api_key", "unauthori", "authentica")),
    (PERMISSION, ("permission", "forbidden", "not_verified")),
    (INVALID_REQUEST, ("invalid_", "unsupported_", "unknown_param", "missing_", "too_large")),
)


def _token_category(token: str) -> tuple[Category, str] | None:
    if token in _WEAK_TOKENS or token in _ONE_API_TYPES:
        return None
    hit = _CODE_TABLE.get(token)
    if hit is not None:
        return hit
    for category, parts in _CODE_SUBSTRINGS:
        if any(part in token for part in parts):
            return category, ""
    return None


_Pattern = "str | re.Pattern[str]"

_QUOTA_TEXTS: tuple[tuple[str, tuple[str | re.Pattern[str], ...]], ...] = (
    ("billing", ("billing hard limit", "billing_hard_limit", "account is not active")),
    ("budget", ("budget has been exceeded", "budget exceeded", "budgetexceedederror",
                "exceeded budget", "over budget")),
    ("relay", ("额度已用尽", "额度不足", "余额不足", "预扣费额度失败", "欠费",
               "quota is not enough",
               re.compile(r"(?:user|token) quota (?:is )?(?:exhausted|used up|not enough|"
                          r"insufficient|exceeded)"))),
    ("", ("insufficient_quota", "insufficient quota", "exceeded your current quota",
          "check your plan and billing", "credit balance is too low", "insufficient credit",
          "insufficient balance", "insufficient funds", "out of credits", "out of credit")),
)  # fmt: skip

_WEAK_QUOTA_RE = re.compile(
    r"quota[ _]exceeded|exceeded (?:your|the) quota|out of quota|quota (?:has been )?(?:used up|"
    r"exhausted|reached)"
)
_RATE_WORDS_RE = re.compile(
    r"per (?:minute|second|hour|day)|\brate\b|/min\b|\b[rti]pm\b|\bretry\b|\brequests per"
)

_DNS_TEXTS = (
    "name or service not known", "nodename nor servname", "getaddrinfo", "no such host",
    "name resolution", "could not resolve", "dns",
)  # fmt: skip
_TLS_TEXTS = (
    re.compile(r"\bssl\b|\btls\b"), "certificate", "handshake", "error code: 525",
    "error code: 526",
)  # fmt: skip

# Message patterns, in order: the first hit decides. Literals are matched with ``in`` on
# the lower-cased, capped text; the few regexes have bounded repetition.
_MESSAGE_RULES: tuple[tuple[Category, str, tuple[str | re.Pattern[str], ...]], ...] = (
    (CONTENT_POLICY, "azure_blocked", ("resource has been temporarily blocked",)),
    (CONTENT_POLICY, "", (
        "safety system", "content policy", "content_policy", "content management policy",
        "moderation_blocked", "safety_violations", "responsibleaipolicyviolation",
        "content_filter", "content filter", "contentpolicyviolationerror", "usage policy",
        "usage policies", "敏感词", "内容违规", "违规内容", "内容安全", "审核未通过")),
    # LiteLLM with no database answers a key that is not its master key with HTTP 400
    # "No connected db.": a key problem, not a request parameter.
    (AUTHENTICATION, "gateway_no_db", ("no connected db",)),
    (AUTHENTICATION, "relay_token", (
        "无效的令牌", "令牌已过期", "未提供令牌", "令牌已被禁用", "令牌状态不可用", "令牌验证失败",
        "invalid proxy server token")),
    (AUTHENTICATION, "", (
        "incorrect api key", "invalid api key", "invalid_api_key", "invalid x-api-key",
        "api key not valid", "no api key provided", "didn't provide an api key",
        "did not provide an api key", "invalid authentication", "invalid_authentication",
        "authentication error", "authenticationerror", "authentication failed",
        "unauthenticated", "unauthorized", "invalid subscription key",
        "must be a member of an organization", "api key expired", "api key has expired",
        "api key has been revoked", "token has expired", "token expired", "invalid token",
        "invalid bearer")),
    (PERMISSION, "verify", ("must be verified", "verify organization",
                            "organization verification")),
    (PERMISSION, "region", (
        "country, region, or territory", "unsupported_country", "not supported in your region",
        "not available in your region", "region is not supported", "region not supported",
        "unsupported region", "not available in your country")),
    (PERMISSION, "model_grant", (
        "not allowed to access model", "key not allowed", "not allowed to use model",
        "not allowed to use this model", "无权使用", "无权访问", "无权限使用")),
    (MODEL_NOT_FOUND, "relay_channel", ("无可用渠道", "no available channel",
                                        "no channel available")),
    (MODEL_NOT_FOUND, "wrong_kind", (
        "not a chat model", "model argument should be left blank",
        "operation does not work with the specified model",
        "not supported in the v1/chat/completions", "not supported in the v1/images")),
    (MODEL_NOT_FOUND, "deployment", (
        "deploymentnotfound", "deployment for this resource does not exist",
        re.compile(r"deployment[^.\n]{0,80}?(?:does not exist|not found)"))),
    (MODEL_NOT_FOUND, "litellm", ("llm provider not provided", "invalid model name passed")),
    (MODEL_NOT_FOUND, "", (
        "model_not_found", "model not found", "does not exist or you do not have access",
        re.compile(r"\bmodel\b[^.\n]{0,80}?(?:does not exist|not found|is not available|"
                   r"is not supported|not supported|unavailable)"),
        "invalid model", "unknown model", "unsupported model", "模型不存在", "不存在该模型",
        "倍率或价格未配置", "litellm.notfounderror")),
    (PERMISSION, "", (
        "permission denied", "permissiondeniederror", "insufficient permissions",
        "do not have permission", "don't have permission", "not have access", "forbidden",
        "access denied", "not authorized", "error code: 1020", "error code: 1010",
        "用户已被封禁", "已被封禁", "用户已被禁用", "没有权限")),
    (RATE_LIMIT, "cf1015", ("error code: 1015", "being rate limited")),
    (RATE_LIMIT, "saturated", ("负载已饱和", "请求过于频繁", "请求频率", "频率限制", "限流")),
    (RATE_LIMIT, "", (
        "rate limit", "rate_limit", "ratelimit", "too many requests", "throttl",
        "resource has been exhausted", "resource_exhausted")),
    (TIMEOUT, "", (
        re.compile(r"time[d]?[ _-]?out"), "deadline exceeded", "deadline_exceeded",
        "error code: 524", "error code: 522", "超时")),
    (NETWORK, "dns", _DNS_TEXTS[:5]),
    (NETWORK, "refused", ("connection refused", "econnrefused", "连接被拒绝")),
    (NETWORK, "tls", _TLS_TEXTS),
    (NETWORK, "reset", (
        "connection reset", "econnreset", "server disconnected", "remote end closed",
        "broken pipe", "unexpected eof", "upstream connect error",
        "disconnect/reset before headers")),
    (NETWORK, "", (
        "connection error", "connection failed", "connect failed", "could not connect",
        "couldn't connect", "failed to connect", "unable to connect", "dial tcp",
        "network is unreachable", "ehostunreach", "origin is unreachable", "web server is down",
        "error code: 521", "error code: 523", "apiconnectionerror", "连接失败", "无法连接")),
    (SERVER, "", (
        "overloaded", "server had an error", "internal server error", "internal error",
        "internal_error", "server_error", "server error", "service unavailable",
        "service_unavailable", "temporarily unavailable", "bad gateway", "no healthy upstream",
        "upstream error", "上游错误", "服务器错误", "服务不可用", "系统繁忙", "服务繁忙")),
    (INVALID_REQUEST, "too_large", (
        "request entity too large", "payload too large", "payload_too_large", "body exceeded",
        "content too large")),
    (INVALID_REQUEST, "route", (
        "invalid url", "cannot post", "page not found", "no route", "unknown url",
        "404 not found")),
    (INVALID_REQUEST, "", (
        "invalid value", "unknown parameter", "unrecognized request argument",
        "missing required parameter", re.compile(r"invalid '[^'\n]{1,60}'"),
        "supported values are", "must be one of", "not supported by this model",
        "does not support parameter", "unsupportedparamserror", "unsupported parameter",
        "unsupported value", "invalid image", "invalid_request", "badrequesterror",
        "bad request", "validation error", "参数错误", "参数无效", "不支持的参数")),
)  # fmt: skip


def _match_any(text: str, patterns: Iterable[str | re.Pattern[str]]) -> bool:
    for pattern in patterns:
        if isinstance(pattern, str):
            if pattern in text:
                return True
        elif pattern.search(text):
            return True
    return False


def _status_category(status: int) -> tuple[Category, str] | None:
    """Status-only meaning; None for 2xx (decided from the body)."""
    if 200 <= status <= 299:
        return None
    special = {
        400: (INVALID_REQUEST, ""),
        401: (AUTHENTICATION, ""),
        402: (QUOTA, ""),
        403: (PERMISSION, ""),
        404: (MODEL_NOT_FOUND, "status_404"),
        405: (INVALID_REQUEST, "route"),
        408: (TIMEOUT, "request"),
        409: (SERVER, "conflict"),
        410: (MODEL_NOT_FOUND, ""),
        411: (INVALID_REQUEST, ""),
        413: (INVALID_REQUEST, "too_large"),
        414: (INVALID_REQUEST, "too_large"),
        415: (INVALID_REQUEST, ""),
        422: (INVALID_REQUEST, ""),
        429: (RATE_LIMIT, ""),
        451: (PERMISSION, "region"),
        499: (TIMEOUT, "client_closed"),
        504: (TIMEOUT, "gateway"),
        522: (TIMEOUT, "gateway"),
        524: (TIMEOUT, "gateway"),
        598: (TIMEOUT, "gateway"),
        599: (TIMEOUT, "gateway"),
        521: (NETWORK, "origin"),
        523: (NETWORK, "origin"),
        525: (NETWORK, "tls"),
        526: (NETWORK, "tls"),
    }
    if status in special:
        return special[status]
    if 500 <= status <= 599:
        return SERVER, ""
    return None
