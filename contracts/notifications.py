"""Webhook notifications: what the notifier delivered, and what it could not deliver (yet)."""

from __future__ import annotations

import uuid

from attrs import field, frozen, validators

from contracts.catalog import Area, Kind, message
from contracts.limits import MAX_ID, MAX_TEXT, non_empty


@message("notification.delivered", kind=Kind.EVENT, area=Area.NOTIFICATIONS)
@frozen(kw_only=True)
class NotificationDelivered:
    """A webhook target answered 2xx to the notification of one event. Stream id: the delivery id."""

    delivery_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str = field(validator=non_empty(MAX_ID))
    target: str = field(validator=non_empty(MAX_ID))
    attempts: int = field(validator=validators.ge(1))
    status_code: int


@message("notification.failed", kind=Kind.EVENT, area=Area.NOTIFICATIONS)
@frozen(kw_only=True)
class NotificationFailed:
    """The first round of attempts failed (or the target's circuit was open). The delivery is kept in
    the notifier's durable retry queue and retried until it is delivered; `notification.delivered`
    follows on the same stream when it is."""

    delivery_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str = field(validator=non_empty(MAX_ID))
    target: str = field(validator=non_empty(MAX_ID))
    attempts: int = field(validator=validators.ge(0))
    reason: str = field(validator=non_empty(MAX_TEXT))
