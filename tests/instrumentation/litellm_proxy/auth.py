"""The proxy's ``general_settings.custom_auth``: callers and teams without a database.

LiteLLM's virtual keys, users and teams live in Postgres; ``custom_auth`` (a documented
proxy feature, https://docs.litellm.ai/docs/proxy/custom_auth) is what the proxy offers
without one: ``async def f(request, api_key) -> UserAPIKeyAuth``. The proxy then puts the
returned ``user_id``, ``team_id`` (and ``team_alias``) into its standard logging metadata,
which its OpenTelemetry callback writes as ``metadata.user_api_key_user_id`` /
``metadata.user_api_key_team_id``; the request's ``user`` becomes
``metadata.user_api_key_end_user_id`` (and ``llm.user``).

``parent_otel_span``: LiteLLM 1.110.2 returns a custom auth's answer as it is, skipping
the step that, for a virtual key, sets ``parent_otel_span`` to the proxy's
``Received Proxy Server Request`` span (``user_api_key_auth.py``, ``valid_token.
parent_otel_span = parent_otel_span``, which only the key path reaches). Without it the
callback finds no parent in the request's metadata, takes the active span (FastAPI's own
``fastapi.endpoint`` span, ended by the time LiteLLM logs the call) and writes the call's
usage onto that ended span: the usage is lost, and the proxy's span is never ended. So
these keys hand the proxy's span back, as the key path does -- except the ``naive`` ones,
which return what the custom-auth documentation shows.
"""

from __future__ import annotations

from fastapi import Request
from litellm.proxy._types import UserAPIKeyAuth

#: api key -> (user_id, team_id, pass the proxy's span back). The teams are named after the
#: directory's tenants, as a LiteLLM admin mapping teams to tenants would name them.
KEYS = {
    "sk-alice": ("alice", "acme", True),
    "sk-bob": ("bob", "acme", True),
    "sk-carol": ("carol", "globex", True),
    # bob's key in globex's team: bob is a member of acme only (directory.yaml)
    "sk-bob-in-globex": ("bob", "globex", True),
    # a shared service key: its owner is no member, the request's `user` names the caller
    "sk-service": ("support-app", "acme", True),
    # what the documentation's example returns: no parent_otel_span
    "sk-naive-bob": ("bob", "acme", False),
    # a team whose metadata names its billing tenant (TEAM_METADATA): carol is no member
    "sk-carol-in-acme-billing": ("carol", "acme-billing", True),
}
#: team id -> the team's metadata, as an admin sets it (`/team/new` with `metadata=`); the
#: proxy writes its allowlisted keys (LITELLM_OTEL_BAGGAGE_TEAM_METADATA_KEYS=tenant_id) as
#: the JSON attribute `litellm.team.metadata`.
TEAM_METADATA = {"acme-billing": {"tenant_id": "acme", "cost_center": "cc-7"}}


class UnknownKey(Exception):
    pass


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    try:
        user_id, team_id, pass_span = KEYS[api_key]
    except KeyError:
        raise UnknownKey("unknown api key") from None
    extra = {}
    if pass_span:
        extra["parent_otel_span"] = getattr(request.state, "parent_otel_span", None)
    if team_id in TEAM_METADATA:
        extra["team_metadata"] = TEAM_METADATA[team_id]
    return UserAPIKeyAuth(
        api_key=api_key, user_id=user_id, team_id=team_id, team_alias=f"{team_id} team", **extra
    )
