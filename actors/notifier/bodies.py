"""Request bodies of one notification: the generic JSON body and a Slack-compatible one (pure)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import contracts
from contracts import Envelope
from contracts.environments import EnvironmentFailed
from contracts.failures import FailureUnrepairable
from contracts.repairs import RepairCompleted

SLACK_TEXT_MAX = 2900  # Slack refuses a section text over 3000 characters


def json_body(envelope: Envelope[Any], delivery_id: uuid.UUID, target: str) -> dict[str, Any]:
    """`{"delivery_id", "target", "type", "event"}`; `event` is the envelope exactly as on `cars.results`."""
    return {"delivery_id": str(delivery_id), "target": target, "type": envelope.type,
            "event": contracts.encode(envelope)}


def summary(envelope: Envelope[Any]) -> tuple[str, list[tuple[str, str]]]:
    """A one-line headline and (label, value) facts for a human reader."""
    data = envelope.data
    if isinstance(data, RepairCompleted):
        verb = "awaits approval" if data.needs_approval else "validated"
        return (f"CARS repair {verb}: {data.test_id} ({data.project})", [
            ("Project", data.project), ("Test", data.test_id), ("Class", data.category.value),
            ("Strategy", data.strategy), ("Confidence", f"{data.confidence:.2f}"), ("Repair", str(data.repair_id)),
        ])
    if isinstance(data, FailureUnrepairable):
        return (f"CARS cannot repair {data.test_id} ({data.project})", [
            ("Project", data.project), ("Test", data.test_id), ("Class", data.category.value),
            ("Reason", data.reason),
        ])
    if isinstance(data, EnvironmentFailed):
        return (f"CARS environment {data.environment_id} failed", [
            ("Environment", str(data.environment_id)), ("Reason", data.reason),
        ])
    return (f"CARS event {envelope.type}", [])


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    # Slack mrkdwn treats these three as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(envelope: Envelope[Any], delivery_id: uuid.UUID) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (the notification fallback) plus Block Kit blocks."""
    headline, facts = summary(envelope)
    lines = "\n".join(f"*{label}:* {_escape(value)}" for label, value in facts)
    return {
        "text": _clip(headline, SLACK_TEXT_MAX),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"*{_escape(headline)}*", SLACK_TEXT_MAX)}},
            *([{"type": "section", "text": {"type": "mrkdwn", "text": _clip(lines, SLACK_TEXT_MAX)}}] if lines else []),
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(
                f"{envelope.type} · event {envelope.id} · delivery {delivery_id}")}]},
        ],
    }


def render(fmt: str, envelope: Envelope[Any], delivery_id: uuid.UUID, target: str) -> bytes:
    body = slack_body(envelope, delivery_id) if fmt == "slack" else json_body(envelope, delivery_id, target)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
