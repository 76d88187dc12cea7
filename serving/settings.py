"""Service settings, read once from ``RECSYS_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Everything an operator can change without touching code."""

    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="forbid")

    ranker_tag: str = Field("recsys-ranker:latest", description="ranker model in the BentoML store")
    candidates_tag: str | None = Field(
        None, description="candidates model; by default the one the ranker was trained against"
    )
    feature_store: str | None = Field(
        None,
        description="feature store root (path or pyarrow URI); by default the snapshot packed with the model",
    )
    n_candidates: int | None = Field(
        None, ge=1, le=2000, description="ALS candidates per request (default: as trained)"
    )
    refresh_seconds: float = Field(30.0, ge=0, description="feature store poll interval; 0 turns refresh off")
    experiments: str | None = Field(
        None,
        description="online experiment file (JSON, docs/experiments.md); by default experiments.json at a local "
        "feature store's root, re-read every refresh_seconds",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="larger request bodies get 413; the default fits the largest legal batch "
        "(100 requests x 1,000 excluded ids of up to 6 characters)",
    )
    max_headers: int = Field(64, ge=8, description="requests with more header lines get 431")
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="requests with larger headers get 431")
    body_timeout_seconds: float = Field(5.0, gt=0, description="a body not received in full by then gets 408")
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="headers not complete this long after the connection opened get 408 and a close"
    )
    idle_timeout_seconds: float = Field(5.0, gt=0, description="a kept-alive connection idle this long is closed")
    max_connections: int = Field(1000, ge=1, description="open connections per worker; the next gets 503")
    backlog: int = Field(2048, ge=64, description="connections the listening socket queues before accepting")
    max_concurrency: int | None = Field(
        None, ge=1, description="requests in progress per service (BentoML's traffic limit; over it: 503)"
    )
    api_key: str | None = Field(None, description="when set, every endpoint but the probes needs it")
    metrics_public: bool = Field(False, description="/metrics open without the API key (for scrapers)")
    trace_requests: bool = Field(
        False, description="OpenTelemetry spans for the API routes (off: they cost ~10% of a request)"
    )
    ssl_certfile: str | None = Field(None, description="PEM certificate: serve HTTPS (BentoML's SSL settings)")
    ssl_keyfile: str | None = Field(None, description="PEM private key for ssl_certfile")
    ssl_ciphers: str = Field(
        "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL",
        description="TLS 1.2 cipher suites (OpenSSL syntax): forward-secret AEAD only; TLS 1.3 suites are all AEAD",
    )
    event_log: str = Field(
        "var/events",
        description="root of the impressions and feedback log (path or pyarrow URI, e.g. s3://bucket/events); "
        "empty: nothing logged and /feedback answers 503",
    )
    event_flush_rows: int = Field(1000, ge=1, description="a worker writes its buffered events at this many rows ...")
    event_flush_seconds: float = Field(5.0, gt=0, description="... or after this many seconds, and at shutdown")
    max_batch_queries: int = Field(256, ge=1, description="queries one pipeline call answers at most (micro-batching)")
    max_pending_queries: int = Field(
        512,
        ge=1,
        description="queries a worker lets wait; a request that does not fit gets 503 with Retry-After at once "
        "(an empty queue takes any request)",
    )
    max_queued_seconds: float = Field(
        2.0,
        gt=0,
        description="seconds of pipeline work (learned from the worker's own calls) a worker lets wait; beyond "
        "it a request gets 503 with Retry-After before its body is read",
    )
    inline_units: float = Field(
        2.0,
        ge=0,
        description="a request that arrives alone and costs at most this (1: a plain query; see query_cost) is "
        "answered on the event loop instead of the pipeline thread; 0 turns it off",
    )
    queue_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="a request still queued for the pipeline after this long gets 503 (one already in a pipeline "
        "call is answered; the traffic timeout bounds the whole request)",
    )
    health_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="also answer /livez and /readyz on this port, from a thread of their own: fast under any load "
        "(for the kubelet; see serving/health.py)",
    )
    # Every interface of the pod, so the kubelet reaches it; the Service does not expose the port.
    health_host: str = Field("0.0.0.0", description="address the probe port listens on")  # nosec B104
    health_stale_seconds: float = Field(
        30.0, gt=0, description="the probes answer 503 when the event loop has not run for this long"
    )
    gil_switch_ms: float = Field(
        1.0,
        gt=0,
        le=100,
        description="how long a thread may hold the GIL while another waits (Python's default: 5 ms); shorter "
        "gets the event loop and the probe thread in sooner while the pipeline thread computes",
    )
    workers: int = Field(1, ge=1, le=64)
    timeout_seconds: float = Field(10.0, gt=0, description="BentoML traffic timeout")

    @field_validator("api_key", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _no_blank_security_value(cls, value: str | None) -> str | None:
        """A security setting that is set but blank, or has spaces, is a mistake: refuse rather than fail open.

        ``RECSYS_API_KEY=$KEY`` with ``KEY`` unset, or a key pasted with a
        newline, would otherwise turn authentication off (or on with a key
        nobody sends) without a word. Unset the variable to turn it off.
        """
        if value is None:
            return None
        if not value.strip():
            raise ValueError("is set but empty or blank: unset it to turn this off, or give a value")
        if value != value.strip() or any(c.isspace() for c in value):
            raise ValueError("contains whitespace (a pasted newline or space?): give the value without it")
        return value


def settings_problems(exc: ValidationError) -> str:
    """A settings error as one line naming each variable, without echoing values (a key must not reach logs)."""
    parts = []
    for error in exc.errors(include_input=False):
        name = "RECSYS_" + "_".join(str(p) for p in error["loc"]).upper()
        parts.append(f"{name} {error['msg'].removeprefix('Value error, ')}")
    return "bad settings: " + "; ".join(parts)


class SettingsError(ValueError):
    """``RECSYS_*`` settings that must not be served with; the message names each variable, never its value."""


@lru_cache(maxsize=1)
def get_settings() -> ServiceSettings:
    """The process-wide settings (validated on first use; :class:`SettingsError` names what is wrong)."""
    try:
        return ServiceSettings()
    except ValidationError as exc:
        raise SettingsError(settings_problems(exc)) from None
