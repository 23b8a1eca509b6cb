"""State-changing buttons (pause, resume, rescan, apply tuning): run the change, then record it with time and
origin (user, client address) in ``operator_actions`` (sql/0006). Dash callbacks are HTTP POSTs, so every
change here is a POST; the origin comes from that request.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from dataclasses import dataclass

import dash

from dashboard import backend as be
from tapewatch.adapters import dashboard_queries as q
from tapewatch.errors import StorageUnavailable, TapewatchError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked: the basic-auth user (``anonymous`` without auth) and the client address."""

    actor: str
    client_addr: str


def origin() -> Origin:
    """The origin of the current callback request (outside a request: the local process)."""
    try:
        headers = dash.ctx.headers or {}
        remote = str(dash.ctx.remote or "")
    except Exception:  # not inside a Dash request (a test, a script)
        return Origin(actor="local", client_addr="")
    return Origin(
        actor=_basic_user(headers.get("Authorization") or headers.get("authorization")), client_addr=remote
    )


def _basic_user(header: str | None) -> str:
    if not header or not header.startswith("Basic "):
        return "anonymous"
    try:
        user, _, _ = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "anonymous"
    return user or "anonymous"


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What happened: ``ok`` and a message for the operator; ``recorded`` False when the audit row could not
    be written (PostgreSQL down), which the message then says."""

    ok: bool
    message: str
    recorded: bool


def perform(
    backend: be.Backend, action: str, detail: str, who: Origin, change: Callable[[], str | None]
) -> ActionResult:
    """Run ``change`` (it returns an optional detail to record, e.g. a run id), then record the action, failed
    or not. Errors the operator can act on (storage down, Dagster down, bad input) become the message."""
    error = ""
    try:
        extra = change()
        if extra:
            detail = f"{detail} {extra}".strip()
    except (TapewatchError, ValueError, LookupError) as exc:  # DagsterUnavailable is a TapewatchError
        error = str(exc) or type(exc).__name__
    recorded = True
    try:
        q.record_action(
            backend.db, action, actor=who.actor, client_addr=who.client_addr, detail=detail, error=error
        )
    except StorageUnavailable as exc:
        log.warning("operator action %s not recorded: %s", action, exc)
        recorded = False
    message = f"{action} failed: {error}" if error else f"{action} done" + (f" ({detail})" if detail else "")
    if not recorded:
        message += " — not recorded in the audit log: PostgreSQL is unavailable"
    return ActionResult(ok=not error, message=message, recorded=recorded)
