"""Status conditions: set one by type, keeping lastTransitionTime when the status holds."""

from __future__ import annotations

import datetime as dt
from typing import Any


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    ok: bool | None,
    reason: str,
    message: str = "",
    generation: int | None = None,
) -> list[dict[str, Any]]:
    status = "Unknown" if ok is None else "True" if ok else "False"
    out = [dict(c) for c in conditions if c.get("type") != type_]
    old = next((c for c in conditions if c.get("type") == type_), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status else now()
    out.append(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": since,
            "observedGeneration": generation,
        }
    )
    order = ["Ready", "Profiled", "BudgetApplied", "SLOMet", "Valid", "Complete"]
    return sorted(out, key=lambda c: order.index(c["type"]) if c["type"] in order else 99)


def field_errors(exc: Any, prefix: str = "spec") -> str:
    """A pydantic ValidationError as 'spec.a.b: message' lines (camelCase, as users wrote them)."""
    parts = []
    for e in exc.errors():
        loc = ".".join([prefix, *(str(x) for x in e["loc"])])
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)
