"""Value types shared by several messages. They carry facts only and stay JSON-native."""

from __future__ import annotations

import enum

from attrs import field, frozen, validators

from contracts.limits import MAX_ID, MAX_TEXT, bounded, keys_match, matches, max_items, non_empty


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


#: How many test runs one validation records (a baseline, the reruns, the regression run, the mutants).
MAX_TIMED_RUNS = 64


@frozen(kw_only=True)
class TimedRun:
    """One test subprocess the validator ran, and when: so heal time can be split into time spent in the
    project's tests and time spent in CARS. `purpose` is baseline, rerun, regressions or mutation."""

    purpose: str = field(validator=non_empty(MAX_ID))
    started_at: float = field(validator=validators.ge(0.0))  # seconds since the epoch (time.time())
    duration_s: float = field(default=0.0, validator=validators.ge(0.0))


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
    #: Every test subprocess of this validation, in order (empty in events recorded before they were timed).
    runs: tuple[TimedRun, ...] = field(default=(), validator=max_items(MAX_TIMED_RUNS))


#: A DNS-1123 label: what Kubernetes accepts as a namespace, Service or label-safe name.
DNS_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_dns_label = matches(DNS_LABEL, "a DNS label: lowercase letters, digits and '-', starting and ending alphanumeric, "
                                "at most 63 characters")
#: A template version: dotted numbers with an optional pre-release tag (`1.2.0`, `2.0.0-rc.1`).
TEMPLATE_VERSION = r"(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,3}(-[0-9A-Za-z][0-9A-Za-z.]{0,30})?"
_version = matches(TEMPLATE_VERSION, "a version of dotted numbers with an optional pre-release tag, "
                                     "such as 1.2.0 or 2.0.0-rc.1")
# Kubernetes quantities, the subset templates use: CPU in cores or millicores, memory in bytes with a suffix.
_cpu = matches(r"([0-9]+(\.[0-9]{1,3})?|[1-9][0-9]*m)", "a CPU quantity such as 500m, 1 or 1.5")
_memory = matches(r"[1-9][0-9]*(Ki|Mi|Gi|Ti|k|M|G|T)?", "a memory quantity such as 512Mi or 2Gi")
_env_names = keys_match(r"[A-Za-z_][A-Za-z0-9_]*", "a variable name of letters, digits and '_', not starting "
                                                  "with a digit")


@frozen(kw_only=True)
class ResourceLimits:
    cpu: str = field(default="500m", validator=_cpu)
    memory: str = field(default="512Mi", validator=_memory)


@frozen(kw_only=True)
class ServiceSpec:
    """A backing service an environment template provides."""

    name: str = field(validator=_dns_label)
    kind: ServiceKind
    image: str = field(validator=non_empty(MAX_ID))
    version: str = field(validator=non_empty(64))
    port: int = field(validator=[validators.ge(1), validators.le(65535)])
    resources: ResourceLimits = ResourceLimits()
    env: dict[str, str] = field(factory=dict, validator=_env_names)


@frozen(kw_only=True)
class Quota:
    cpu: str = field(default="2", validator=_cpu)
    memory: str = field(default="4Gi", validator=_memory)
    pods: int = field(default=20, validator=validators.ge(1))


@frozen(kw_only=True)
class TemplateSpec:
    """An environment template. A (name, version) pair is immutable once published.

    `backend` names the environment backend that serves it (`local`, `kubernetes`) when a request does
    not name one; unset, the provisioner's default (CARS_ENV_BACKEND) applies.
    """

    name: str = field(validator=_dns_label)
    version: str = field(validator=_version)
    description: str = field(default="", validator=bounded(MAX_TEXT))
    runner_image: str = field(default="python:3.11-slim", validator=non_empty(MAX_ID))
    services: tuple[ServiceSpec, ...] = field(default=(), validator=max_items(16))
    quota: Quota = Quota()
    default_ttl_s: int = field(default=1800, validator=[validators.ge(30), validators.le(7 * 24 * 3600)])
    backend: str | None = field(default=None, validator=validators.optional(_dns_label))


def version_key(version: str) -> tuple[tuple[int, ...], int, str]:
    """Orders template versions: by their numbers (trailing zeros ignored), a pre-release before its release."""
    numbers, _, pre = version.partition("-")
    parts = [int(p) if p.isdigit() else 0 for p in numbers.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts), 0 if pre else 1, pre
