"""The environment templates CARS publishes at first start (version 1.0.0 of each).

Images are official Docker Hub images at pinned minor versions; resources are what each service needs
for a test suite, not a production load; quotas leave room for the test runner next to the services.
Publishing is idempotent: the same body of the same version is a no-op, in any number of processes.
A change to one of these must be published as a new version (versions are immutable).
"""

from __future__ import annotations

from contracts.values import Quota, ResourceLimits, ServiceKind, ServiceSpec, TemplateSpec

VERSION = "1.0.0"
RUNNER_IMAGE = "python:3.11-slim"

POSTGRES = ServiceSpec(
    name="postgres", kind=ServiceKind.POSTGRES, image="postgres", version="16.4-alpine", port=5432,
    resources=ResourceLimits(cpu="500m", memory="512Mi"),
    env={"POSTGRES_USER": "postgres", "POSTGRES_DB": "test", "POSTGRES_HOST_AUTH_METHOD": "trust"},
)
REDIS = ServiceSpec(
    name="redis", kind=ServiceKind.REDIS, image="redis", version="7.4-alpine", port=6379,
    resources=ResourceLimits(cpu="250m", memory="256Mi"),
)
MYSQL = ServiceSpec(
    name="mysql", kind=ServiceKind.MYSQL, image="mysql", version="8.4", port=3306,
    resources=ResourceLimits(cpu="1", memory="1Gi"),
    env={"MYSQL_ALLOW_EMPTY_PASSWORD": "yes", "MYSQL_DATABASE": "test"},
)
MONGODB = ServiceSpec(
    name="mongodb", kind=ServiceKind.MONGODB, image="mongo", version="7.0", port=27017,
    resources=ResourceLimits(cpu="500m", memory="1Gi"),
)


def builtin_templates() -> list[TemplateSpec]:
    """Every built-in template, in the order they are published."""

    def template(name: str, description: str, services: tuple[ServiceSpec, ...], quota: Quota) -> TemplateSpec:
        return TemplateSpec(name=name, version=VERSION, description=description, runner_image=RUNNER_IMAGE,
                            services=services, quota=quota, default_ttl_s=1800)

    return [
        template("python", "Python test runner, no backing services.", (),
                 Quota(cpu="2", memory="2Gi", pods=4)),
        template("python-postgres", "Python test runner with PostgreSQL 16.", (POSTGRES,),
                 Quota(cpu="3", memory="3Gi", pods=6)),
        template("python-redis", "Python test runner with Redis 7.", (REDIS,),
                 Quota(cpu="3", memory="3Gi", pods=6)),
        template("python-mysql", "Python test runner with MySQL 8.4.", (MYSQL,),
                 Quota(cpu="3", memory="4Gi", pods=6)),
        template("python-mongodb", "Python test runner with MongoDB 7.", (MONGODB,),
                 Quota(cpu="3", memory="4Gi", pods=6)),
        template("full-stack", "Python test runner with PostgreSQL 16 and Redis 7.", (POSTGRES, REDIS),
                 Quota(cpu="4", memory="4Gi", pods=8)),
    ]


__all__ = ["VERSION", "builtin_templates"]
