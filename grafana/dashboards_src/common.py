"""What several dashboards share: uids, slugs, the tenant selectors."""

from __future__ import annotations

UID_OVERVIEW = "llm-tenant-overview"
UID_ASSETS = "llm-tenant-assets"
UID_DRILLDOWN = "llm-drilldown"
UID_SRE = "llm-sre-governance"
#: The drill-down's slug in its URL (Grafana finds a dashboard by uid; the slug is cosmetic).
DRILL_SLUG = "llm-tokens-drill-down"

TENANT = 'tenant="$tenant"'
OWNER = 'owner_tenant="$tenant"'


def uid(base: str, lang: str) -> str:
    """A dashboard's uid in a language: English keeps the base uid (existing links and
    bookmarks still work), other languages append theirs."""
    return base if lang == "en" else f"{base}-{lang}"
