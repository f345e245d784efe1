"""The root of actor errors. Each capability subclasses `Rejected` for input that can never succeed."""

from __future__ import annotations


class ActorError(Exception):
    """Root of every actor's errors."""


class Rejected(ActorError):
    """The message is valid but can never be carried out (unknown target, forbidden transition).

    The consumer dead-letters it at once with this error's text as the reason, instead of retrying.
    """
