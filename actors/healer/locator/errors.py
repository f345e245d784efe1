"""The root of the locator capability's errors."""

from __future__ import annotations

from actors.errors import ActorError


class LocatorError(ActorError):
    """Root of every error raised while reading pages, selectors or the last-good element store."""


class SelectorError(LocatorError):
    """A selector uses syntax outside the supported CSS subset, or is malformed."""


class SnapshotStoreError(LocatorError):
    """A last-good element store file is unreadable, oversized or does not match its shape."""


__all__ = ["LocatorError", "SelectorError", "SnapshotStoreError"]
