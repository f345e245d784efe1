"""Errors of the environment provisioner: one root, specific subclasses (STYLE rule 10)."""

from __future__ import annotations

from actors.errors import ActorError


class ProvisionError(ActorError):
    """An environment could not be created, inspected or released."""


class EnvironmentUnavailable(ProvisionError):
    """The backend cannot provide what was asked for here (a service that is not installed, say)."""


class ServiceStartError(ProvisionError):
    """A backing service process did not come up."""


class BackendUnavailable(ActorError):
    """The backend's control plane (the Kubernetes API server) cannot be reached right now.

    Transient, and deliberately not a ProvisionError: the provisioner must not turn it into
    `environment.failed`. It propagates, the command stays pending, and is retried after reclaim.
    """


__all__ = ["BackendUnavailable", "EnvironmentUnavailable", "ProvisionError", "ServiceStartError"]
