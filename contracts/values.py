"""Value types shared by several messages. They carry facts only and stay JSON-native."""

from __future__ import annotations

import enum

from attrs import field, frozen, validators

from contracts.limits import MAX_ID, MAX_TEXT, bounded, non_empty


class Outcome(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"


class FailureClass(enum.Enum):
    """What kind of failure a test run shows; DESIGN.md explains each."""

    IMPORT_ERROR = "import_error"
    RENAMED_SYMBOL = "renamed_symbol"
    SIGNATURE_DRIFT = "signature_drift"
    FIXTURE_MISSING = "fixture_missing"
    LOCATOR_DRIFT = "locator_drift"
    TIMEOUT = "timeout"
    ASSERTION_DRIFT = "assertion_drift"
    FLAKY = "flaky"
    ENVIRONMENT = "environment"
    PRODUCT_REGRESSION = "product_regression"
    UNKNOWN = "unknown"


class ServiceKind(enum.Enum):
    POSTGRES = "postgres"
    REDIS = "redis"
    MYSQL = "mysql"
    MONGODB = "mongodb"


@frozen(kw_only=True)
class ComparedValues:
    """The two sides of a failed `assert left == right`, as reprs."""

    left: str = field(validator=bounded(MAX_TEXT))
    right: str = field(validator=bounded(MAX_TEXT))
    operator: str = field(default="==", validator=bounded(8))


@frozen(kw_only=True)
class FailureEvidence:
    """What a test runner saw when a test failed. Every field is optional: JUnit XML carries less than
    the CARS pytest plugin does."""

    exception_type: str | None = field(default=None, validator=validators.optional(bounded(MAX_ID)))
    message: str | None = field(default=None, validator=validators.optional(bounded(MAX_TEXT)))
    traceback: str | None = field(default=None, validator=validators.optional(bounded(4 * MAX_TEXT)))
    file: str | None = field(default=None, validator=validators.optional(bounded(MAX_ID)))
    line: int | None = None
    failing_frame: str | None = field(default=None, validator=validators.optional(bounded(MAX_ID)))
    compared: ComparedValues | None = None
    fixtures_available: tuple[str, ...] = ()
    selector: str | None = field(default=None, validator=validators.optional(bounded(MAX_ID)))
    page_html: str | None = field(default=None, validator=validators.optional(bounded(64 * MAX_TEXT)))


@frozen(kw_only=True)
class TestResult:
    """One test's outcome in a run. Passing tests carry no evidence, which keeps large runs small."""

    __test__ = False  # not a pytest test class

    test_id: str = field(validator=non_empty(MAX_ID))
    outcome: Outcome
    duration_s: float = field(default=0.0, validator=validators.ge(0.0))
    evidence: FailureEvidence | None = None


@frozen(kw_only=True)
class GuardrailViolation:
    rule: str = field(validator=non_empty(MAX_ID))
    detail: str = field(default="", validator=bounded(MAX_TEXT))


class MutationVerdict(enum.Enum):
    PASSED = "passed"  # the mutant was killed: the healed test notices a broken function
    FAILED = "failed"  # the mutant survived: the healed test would stay green on a bug
    NOT_APPLICABLE = "not_applicable"


@frozen(kw_only=True)
class ValidationEvidence:
    """What the validator measured for one repair candidate."""

    reruns: int = field(default=0, validator=validators.ge(0))
    passes: int = field(default=0, validator=validators.ge(0))
    regressions: tuple[str, ...] = ()
    guardrails: tuple[GuardrailViolation, ...] = ()
    mutation: MutationVerdict = MutationVerdict.NOT_APPLICABLE
    mutation_detail: str = field(default="", validator=bounded(MAX_TEXT))
    collected_before: int | None = None
    collected_after: int | None = None
    log_tail: str = field(default="", validator=bounded(4 * MAX_TEXT))
    duration_s: float = field(default=0.0, validator=validators.ge(0.0))


@frozen(kw_only=True)
class ResourceLimits:
    cpu: str = field(default="500m", validator=non_empty(32))
    memory: str = field(default="512Mi", validator=non_empty(32))


@frozen(kw_only=True)
class ServiceSpec:
    """A backing service an environment template provides."""

    name: str = field(validator=non_empty(63))
    kind: ServiceKind
    image: str = field(validator=non_empty(MAX_ID))
    version: str = field(validator=non_empty(64))
    port: int = field(validator=[validators.ge(1), validators.le(65535)])
    resources: ResourceLimits = ResourceLimits()
    env: dict[str, str] = field(factory=dict)


@frozen(kw_only=True)
class Quota:
    cpu: str = field(default="2", validator=non_empty(32))
    memory: str = field(default="4Gi", validator=non_empty(32))
    pods: int = field(default=20, validator=validators.ge(1))


@frozen(kw_only=True)
class TemplateSpec:
    """An environment template. A (name, version) pair is immutable once published."""

    name: str = field(validator=non_empty(63))
    version: str = field(validator=non_empty(64))
    description: str = field(default="", validator=bounded(MAX_TEXT))
    runner_image: str = field(default="python:3.11-slim", validator=non_empty(MAX_ID))
    services: tuple[ServiceSpec, ...] = ()
    quota: Quota = Quota()
    default_ttl_s: int = field(default=1800, validator=[validators.ge(30), validators.le(7 * 24 * 3600)])
