"""The unified job schema: what a caller asks for, what a job is, and the error codes it can carry.

Imports pydantic and `pricing.money` only (itself pure, importing nothing of the broker), so adapters
and pricing can depend on it without pulling in the server. A job's and an attempt's money fields are
`Money` (integer micro-USD) inside the program and six-decimal strings ("0.055000") on the wire, in
stored records and in the OpenAPI document; see `Usd`.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

# Re-exported (`as`): policies, the API and the job steps take these from the schema.
from broker.request_types import METADATA_MAX_DEPTH as METADATA_MAX_DEPTH
from broker.request_types import ModelName, ProviderName, WholeNumber, YesNo
from broker.request_types import Priority as Priority
from broker.request_types import decode_data_uri as decode_data_uri
from broker.request_types import metadata_problem as metadata_problem
from pricing.money import Money

PROMPT_MAX_CHARS = 2000
DURATION_MIN_S = 1
DURATION_MAX_S = 10
METADATA_MAX_BYTES = 4096
IMAGE_URL_MAX_CHARS = 2048
# A data: URI is decoded in memory; bigger images go as a multipart upload.
DATA_URI_MAX_BYTES = 10 * 1024 * 1024

_USD_PATTERN = r"^\d{1,9}(\.\d{1,6})?$"
UsdString = Annotated[str, Field(pattern=_USD_PATTERN, description="USD as a decimal string")]


def _usd(value: object) -> Money:
    """A `Money` as given, or read from its decimal string (the wire's and every stored record's form)."""
    if isinstance(value, Money):
        return value
    if isinstance(value, str):
        return Money.parse(value)
    raise ValueError('an amount of USD: a decimal string such as "0.055000"')


# Money a job or attempt carries: `Money` inside, the API's six-decimal string on the wire and in
# stored records; the OpenAPI document shows the plain string it always did.
Usd = Annotated[
    Money, PlainValidator(_usd), PlainSerializer(str, return_type=str), WithJsonSchema({"type": "string"})
]


class Mode(StrEnum):
    IMAGE_TO_VIDEO = "image_to_video"
    TEXT_TO_VIDEO = "text_to_video"


class AspectRatio(StrEnum):
    WIDE = "16:9"
    TALL = "9:16"
    SQUARE = "1:1"
    CLASSIC = "4:3"
    PORTRAIT = "3:4"
    CINEMA = "21:9"


class Resolution(StrEnum):
    HD = "720p"
    FULL_HD = "1080p"


class Quality(StrEnum):
    BASIC = "basic"
    STANDARD = "standard"
    PREMIUM = "premium"

    @property
    def rank(self) -> int:
        return _QUALITY_RANK[self]


_QUALITY_RANK = {Quality.BASIC: 0, Quality.STANDARD: 1, Quality.PREMIUM: 2}


class Feature(StrEnum):
    """Request features a route must support when the request uses them."""

    SEED = "seed"
    AUDIO = "audio"
    CAMERA_FIXED = "camera_fixed"


class Phase(StrEnum):
    """The one lifecycle every state in the broker follows (a job, an attempt, a provider's task, a local
    render): waiting, running, then one of three ends. What is terminal is said here and only here."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _ENDS


_ENDS = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})
# The state words beyond the phases' own, each in the phase it belongs to.
_PHASE_OF = {"submitting": Phase.QUEUED, "submitted": Phase.QUEUED, "downloading": Phase.RUNNING}


class Lifecycle(StrEnum):
    """Base of the state enums (`JobStatus`, `AttemptStatus`, `adapters.base.TaskState`,
    `local_backend.scheduler.RenderState`). Each keeps its own members, whose values are on the wire and
    in stored records; a member named after a phase is in it, the others are placed in `_PHASE_OF`."""

    @property
    def phase(self) -> Phase:
        return _PHASE_OF.get(self.value) or Phase(self.value)

    @property
    def terminal(self) -> bool:
        return self.phase.terminal


class JobStatus(Lifecycle):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptStatus(Lifecycle):
    """One try at one route. `submitting` means the submit may have reached the provider."""

    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ErrorCode(StrEnum):
    """Every error code the API and a job's `error` can carry."""

    INVALID_REQUEST = "invalid_request"
    INVALID_JSON = "invalid_json"
    INVALID_IMAGE = "invalid_image"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_FETCH_FAILED = "image_fetch_failed"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    NO_FEASIBLE_ROUTE = "no_feasible_route"
    BUDGET_EXCEEDED = "budget_exceeded"
    NOT_READY = "not_ready"
    STORE_UNAVAILABLE = "store_unavailable"
    INSUFFICIENT_STORAGE = "insufficient_storage"
    # Outcomes of a job that ran.
    PROVIDER_ERROR = "provider_error"
    RATE_LIMITED = "rate_limited"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    REJECTED = "rejected"
    REQUEST_INVALID = "request_invalid"
    GENERATION_FAILED = "generation_failed"
    CONTENT_REJECTED = "content_rejected"
    AUTH_FAILED = "auth_failed"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    SUBMISSION_UNCERTAIN = "submission_uncertain"
    TIMED_OUT = "timed_out"
    OUTPUT_INVALID = "output_invalid"
    INTERNAL = "internal"


class BrokerError(Exception):
    """Root of every error the broker raises on purpose; the HTTP edge maps it to the error envelope.

    Subclasses set `code`; `details` is JSON-safe extra context for the caller. The HTTP status is
    the edge's business: `broker/api/middleware.py` maps each class to one.
    """

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Constraints(_Model):
    """What a caller (or a team policy) demands of the route; a request can only tighten a policy."""

    max_cost_usd: UsdString | None = None
    max_latency_s: WholeNumber | None = Field(default=None, ge=1, le=86_400)
    min_quality: Quality | None = None
    providers: list[ProviderName] | None = Field(default=None, max_length=32)
    exclude_providers: list[ProviderName] = Field(default_factory=list, max_length=32)
    models: list[ModelName] | None = Field(default=None, max_length=64)


class JobRequest(_Model):
    """The unified request: `POST /v1/jobs` and `POST /v1/quotes` take this body."""

    prompt: str = Field(default="", max_length=PROMPT_MAX_CHARS)
    image_url: str | None = Field(default=None, max_length=DATA_URI_MAX_BYTES * 4 // 3 + 64)
    # Set by the API for a multipart upload; the bytes themselves live in the artifact store.
    image_upload: str | None = Field(
        default=None,
        pattern=r"^[a-f0-9]{64}$",
        json_schema_extra={
            "readOnly": True,
            "description": "SHA-256 of the uploaded image; set by the broker",
        },
    )
    mode: Mode | None = None
    duration_s: WholeNumber = Field(default=5, ge=DURATION_MIN_S, le=DURATION_MAX_S)
    aspect_ratio: AspectRatio = AspectRatio.WIDE
    resolution: Resolution = Resolution.HD
    audio: YesNo = False
    camera_fixed: YesNo = False
    seed: WholeNumber | None = Field(default=None, ge=0, le=2**32 - 1)
    constraints: Constraints = Field(default_factory=Constraints)
    webhook_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://")
    metadata: dict[str, Any] = Field(default_factory=dict)
    priority: Priority | None = None  # unset: the team policy's `priority`, else interactive

    @field_validator("prompt")
    @classmethod
    def _strip_prompt(cls, value: str) -> str:
        return value.strip()

    @field_validator("image_url")
    @classmethod
    def _check_image_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("data:"):
            decode_data_uri(value)
            return value
        # Plain http passes here only to meet the outbound rules, which admit it for allow-listed hosts.
        if not value.startswith(("https://", "http://")) or len(value) > IMAGE_URL_MAX_CHARS:
            raise ValueError("must be an https:// URL or a data:image/...;base64 URI")
        return value

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = metadata_problem(value)
        if problem is not None:
            raise ValueError(problem)
        if len(json.dumps(value, separators=(",", ":"))) > METADATA_MAX_BYTES:
            raise ValueError(f"metadata is larger than {METADATA_MAX_BYTES} bytes of JSON")
        return value

    @model_validator(mode="after")
    def _infer_mode(self) -> JobRequest:
        has_image = self.image_url is not None or self.image_upload is not None
        if self.image_url is not None and self.image_upload is not None:
            raise ValueError("give the image either as image_url or as an uploaded file, not both")
        if self.mode is None:
            object.__setattr__(self, "mode", Mode.IMAGE_TO_VIDEO if has_image else Mode.TEXT_TO_VIDEO)
        elif self.mode is Mode.IMAGE_TO_VIDEO and not has_image:
            raise ValueError("mode image_to_video needs an image (image_url or an image file part)")
        elif self.mode is Mode.TEXT_TO_VIDEO and has_image:
            raise ValueError("mode text_to_video takes no image; drop the image or use image_to_video")
        if self.mode is Mode.TEXT_TO_VIDEO and not self.prompt:
            raise ValueError("text_to_video needs a prompt")
        return self

    @property
    def resolved_mode(self) -> Mode:
        """The mode, always set after validation."""
        assert self.mode is not None
        return self.mode

    @property
    def features(self) -> frozenset[Feature]:
        """The features this request uses, which its route must support."""
        used = set()
        if self.seed is not None:
            used.add(Feature.SEED)
        if self.audio:
            used.add(Feature.AUDIO)
        if self.camera_fixed:
            used.add(Feature.CAMERA_FIXED)
        return frozenset(used)


class RouteRef(_Model):
    provider: str
    model: str
    estimated_cost_usd: Usd | None = None
    unpriced: bool = False  # the estimate is the policy's ceiling for a route with no known price


class JobError(_Model):
    code: ErrorCode
    message: str


class Output(_Model):
    url: str
    content_type: str = "video/mp4"
    bytes: int
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    sha256: str
    fps: float | None = None
    codec: str | None = None
    normalized: bool | None = None  # re-encoded to the asked shape (else the provider's bytes as sent)
    normalized_from: dict[str, Any] | None = None  # the shape the provider sent, when normalized


class Attempt(_Model):
    """One try at one route; `cost_usd` is what that try really cost (0 when refunded)."""

    id: str
    job_id: str
    provider: str
    model: str
    status: AttemptStatus
    provider_job_id: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    estimated_cost_usd: Usd | None = None
    cost_usd: Usd | None = None
    refunded_usd: Usd | None = None  # what the provider charged and gave back for this attempt
    # On an unpriced route cost_usd is the policy's ceiling (an upper bound); the provider's own figure
    # in its unit stays in `reported_cost` beside it, since no rate converts it.
    unpriced: bool = False
    # A charge the broker believes happened but the provider has not confirmed (a task abandoned at its
    # deadline that the provider could not cancel): booked in `cost_usd` until the provider says.
    unconfirmed_usd: Usd | None = None
    reported_cost: str | None = None  # the provider's own figure, in its unit ("25 credits")
    error: JobError | None = None


class DeliveryStatus(StrEnum):
    """Where the delivery of a finished job to its `webhook_url` stands."""

    PENDING = "pending"  # tried, to be tried again
    DELIVERED = "delivered"
    FAILED = "failed"  # given up: every try failed, the receiver refused it, or it could not be sent


class WebhookDelivery(_Model):
    """The last delivery of the job's webhook: its outcome, how many tries, what the receiver said."""

    status: DeliveryStatus
    attempts: int = 0
    http_status: int | None = None
    error: str | None = None
    last_attempt_at: datetime | None = None


class Job(_Model):
    id: str
    team: str
    status: JobStatus
    request: JobRequest
    route: RouteRef | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    estimated_cost_usd: Usd | None = None
    cost_usd: Usd = Money(0)
    output: Output | None = None
    error: JobError | None = None
    webhook: WebhookDelivery | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
