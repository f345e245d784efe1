"""Fakes allowed by the project standards (only the Kubernetes API server); each is named a fake."""
