"""The ``[server]`` settings section: token, upload limits, micro-batching, index reloading."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerConfig:
    """Settings of ``tiefjax serve`` (``[server]`` in ``tiefjax.toml``)."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to bind; 127.0.0.1 = local"})
    port: int = field(default=8000, metadata={"help": "TCP port"})
    token: str = field(
        default="",
        metadata={"help": "bearer token for writes; empty: TIEFJAX_TOKEN or a generated one"},
    )
    token_annotator: str = field(
        default="owner",
        metadata={"help": "annotator name the history records for writes with the server's token"},
    )
    max_upload_bytes: int = field(
        default=10 * 1024 * 1024, metadata={"help": "largest accepted upload in bytes"}
    )
    max_upload_pixels: int = field(
        default=40_000_000, metadata={"help": "largest accepted upload in pixels (width*height)"}
    )
    max_upload_aspect: float = field(
        default=10.0,
        metadata={
            "help": "most elongated upload accepted (longer side / shorter side): it bounds the "
            "photo the locator scores, resized to its shorter side, before any resize"
        },
    )
    max_active_uploads: int = field(
        default=32,
        metadata={
            "help": "upload searches in the server at once (read, decoded, queued or searched); "
            "more get 503 with Retry-After before their body is read"
        },
    )
    upload_deadline_s: float = field(
        default=30.0,
        metadata={
            "help": "seconds within which an upload search is answered, else 503 with "
            "Retry-After (its queued work is dropped)"
        },
    )
    header_timeout_s: float = field(
        default=10.0,
        metadata={
            "help": "seconds a client has to send a request's line and headers (from the "
            "connection or the previous response); slower ones get 408 and are cut off"
        },
    )
    body_timeout_s: float = field(
        default=60.0,
        metadata={
            "help": "seconds a client has to send a request's body once its headers are in; "
            "slower ones get 408 and are cut off"
        },
    )
    batch_max: int = field(
        default=16,
        metadata={
            "help": "most upload searches combined into one device call (an elongated photo "
            "counts as its aspect ratio over 4:3; the cheapest waiting go first)"
        },
    )
    batch_wait_ms: float = field(
        default=10.0,
        metadata={
            "help": "how long a batch waits for more uploads (milliseconds) while fewer wait "
            "than were active around the last batch; a lone client does not wait"
        },
    )
    encoder_batch: int = field(
        default=0,
        metadata={
            "help": "most images per encoder call for uploads (a short batch is padded only to "
            "the next power of two); 0 = batch_max"
        },
    )
    reload_check_s: float = field(
        default=2.0, metadata={"help": "seconds between checks for a rebuilt index"}
    )
    thumb_sizes: tuple[int, ...] = field(
        default=(128, 256, 512), metadata={"help": "allowed thumbnail sizes (longest side)"}
    )

    @classmethod
    def tiny(cls) -> ServerConfig:
        """Small limits and instant index checks, for tests."""
        return cls(max_upload_bytes=256 * 1024, max_upload_pixels=4_000_000, reload_check_s=0.0)
