"""The backend's settings in one typed dataclass, read once from the environment (or given by tests).

Every environment variable the backend reads is listed here, and only here::

    VRSHQ_PLUGIN          model plugin name (default "vrshq"; see plugins.registry)
    VRSHQ_MODEL           model folder of the plugin (VRS-HQ: vrshq/, sam2/, clip/)
    VRSHQ_DEVICE          "auto" (default), "cpu", "cuda", "cuda:1", ...
    VRSHQ_PRECISION       "auto" (default: official on CUDA, fp32 on a CPU), "official" (the
                          release's bf16 weights and arithmetic) or "fp32"
    MODEL_DIR             the backend's own data: corrections log, task states, downloads
                          (default ./vrshq-data)
    LABEL_STUDIO_URL      Label Studio as the backend reaches it (also LABEL_STUDIO_HOST)
    LABEL_STUDIO_API_KEY  a user's token (legacy token or personal access token; also
                          LABEL_STUDIO_ACCESS_TOKEN), for media downloads and write-back
    LOCAL_FILES_DOCUMENT_ROOT  Label Studio's local-files root, read directly when it is
                          mounted here (also LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT);
                          VRSHQ_MEDIA_ROOTS adds more roots (os.pathsep separated)
    BASIC_AUTH_USER / BASIC_AUTH_PASS   HTTP basic auth on every route but /health
    VRSHQ_SYNC_FRAMES     frames a /predict may process before it runs as a job (default 600)
    VRSHQ_JOB_WORKERS     jobs run at the same time in this process (default 1)
    VRSHQ_MAX_OBJECTS     objects per task (default 20)
    VRSHQ_MAX_PIXELS      width x height a task's video may have (default 16777216, 4096x4096)
    VRSHQ_MAX_FRAMES      frames a task's video may have (default 108000, an hour at 30 fps)
    VRSHQ_KEYFRAME_QUALITY  JPEG quality of keyframe images (default 90)
    VRSHQ_STRIP_FRAMES    thumbnails per object in a thumbnail strip (default 6; 0: no strips;
                          see backend.labelstudio.strips)
    VRSHQ_MEDIA_URL       the backend's address as annotators' browsers reach it (http(s)://...):
                          keyframe images, strips and the overlay of a task whose video is not
                          a writable local file are served from <it>/media/... (unset: data: URL
                          images and no overlay; see backend.labelstudio.served_media)
    VRSHQ_MASK_PAGES      extra mask pages per object beyond its keyframe page, for the frames
                          most worth checking (default 2; 0: keyframe only; 0..20; see
                          backend.labelstudio.pages)
    VRSHQ_DEMAND_PAGE     1 (default): end the mask pager with an on-demand page, where `frame N`
                          typed in the prompt box shows frame N in the open editor; 0: none
                          (the page then shows after a reload; see backend.labelstudio.demand_page)
    VRSHQ_FEATURE_CACHE_MB  disk space for predictions' image features (SAM-2's, SAM 3's tracker
                          features), kept under <data_dir>/features so a correction skips the
                          image encoder (plugins/sam3_features.py for sam3); the
                          oldest tasks are evicted past it (default 2048; 0: off; see
                          vrshq.engine.persist)
    VRSHQ_FPS_MISMATCH    a task whose fps is not its video file's own rate: "refuse" (default,
                          a 422 naming both) or "use-file" (write the file's rate into the task
                          in Label Studio and predict with it); see backend.frame_rate
    REDIS_URL             run jobs on Redis with RQ (`vrshq worker` processes); unset: in-process
    VRSHQ_QUEUE / VRSHQ_MAX_QUEUED  the RQ queue name (vrshq) and its bound (100): past it,
                          /predict answers 503 "busy, retry later"
    VRSHQ_TRAIN_STEPS / VRSHQ_TRAIN_LR / VRSHQ_TRAIN_HOLDOUT  fine-tuning from Label Studio's
                          Train button: steps (500), learning rate (3e-4), held-out video share (0.2)
    VRSHQ_LABEL_CLIP      the CLIP rule of a prompt's label (vrshq.backend.labelstudio.label_rules): "auto" (default:
                          only with the official CLIP weights), "on" (any CLIP) or "off"
    VRSHQ_LABEL_CLIP_THRESHOLD  the cosine similarity the nearest label must exceed (0.8)

Bounds on what one request may hold or cost (a request past one is a 4xx that names it)::

    VRSHQ_REQUEST_TIMEOUT   seconds a client has to send a whole request, header and body
                            (default 30); `vrshq serve` reads requests before a thread takes
                            them and closes a connection that is slower (408)
    VRSHQ_MAX_BUFFERED_BYTES  request bytes one server process holds while requests arrive
                            (default 256 MiB); past it a new request with a body gets a 503
    VRSHQ_MAX_PREDICT_BYTES / VRSHQ_MAX_WEBHOOK_BYTES / VRSHQ_MAX_SETUP_BYTES /
    VRSHQ_MAX_OTHER_BYTES   request body size of /predict (16 MiB), /webhook (32 MiB),
                            /setup (1 MiB) and every other route (64 KiB); 413 beyond
    VRSHQ_MAX_JSON_CONTAINERS  JSON objects and arrays in one body (default 200000); 413 beyond
    VRSHQ_MAX_TASKS         tasks in one /predict (default 1000)
    VRSHQ_MAX_PROMPT_CHARS / VRSHQ_MAX_PROMPT_TOKENS  one object's prompt: characters (1000)
                            and tokens of the model's tokenizer (256)
    VRSHQ_MAX_TASK_PROMPT_CHARS / VRSHQ_MAX_TASK_PROMPT_TOKENS  all prompts of a task together:
                            characters (8000) and tokens (2048)
    VRSHQ_MAX_ROW_BYTES     one row of the corrections log as JSON (default 4 MiB)
    VRSHQ_MAX_ERROR_CHARS   the error text of an answer (default 1000; longer is cut)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vrshq.backend.labelstudio.label_rules import CLIP_MODES, DEFAULT_CLIP_THRESHOLD
from vrshq.engine.config import PRECISIONS
from vrshq.errors import VrshqError


class ConfigError(VrshqError):
    """A setting that cannot be used (named, with the value)."""


FPS_MISMATCH = ("refuse", "use-file")  # VRSHQ_FPS_MISMATCH's choices

# The integer bounds on one request: field name -> environment variable.
BOUNDS = {
    "max_buffered_bytes": "VRSHQ_MAX_BUFFERED_BYTES",
    "max_predict_bytes": "VRSHQ_MAX_PREDICT_BYTES",
    "max_webhook_bytes": "VRSHQ_MAX_WEBHOOK_BYTES",
    "max_setup_bytes": "VRSHQ_MAX_SETUP_BYTES",
    "max_other_bytes": "VRSHQ_MAX_OTHER_BYTES",
    "max_json_containers": "VRSHQ_MAX_JSON_CONTAINERS",
    "max_tasks": "VRSHQ_MAX_TASKS",
    "max_prompt_chars": "VRSHQ_MAX_PROMPT_CHARS",
    "max_prompt_tokens": "VRSHQ_MAX_PROMPT_TOKENS",
    "max_task_prompt_chars": "VRSHQ_MAX_TASK_PROMPT_CHARS",
    "max_task_prompt_tokens": "VRSHQ_MAX_TASK_PROMPT_TOKENS",
    "max_row_bytes": "VRSHQ_MAX_ROW_BYTES",
    "max_error_chars": "VRSHQ_MAX_ERROR_CHARS",
}


@dataclass(frozen=True)
class BackendConfig:
    """How one backend process runs: its plugin and model, Label Studio, storage, limits."""

    plugin: str = "vrshq"
    model_dir: str | None = None
    device: str = "auto"
    precision: str = "auto"
    data_dir: str = "vrshq-data"
    label_studio_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    local_roots: tuple[str, ...] = ()
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = field(default=None, repr=False)
    sync_frame_budget: int = 600
    job_workers: int = 1
    max_objects: int = 20
    max_pixels: int = 4096 * 4096
    max_frames: int = 108_000
    keyframe_quality: int = 90
    strip_frames: int = 6
    media_url: str | None = None
    mask_pages: int = 2
    demand_page: bool = True
    feature_cache_mb: int = 2048
    fps_mismatch: str = "refuse"
    redis_url: str | None = field(default=None, repr=False)
    queue: str = "vrshq"
    max_queued: int = 100
    train_steps: int = 500
    train_lr: float = 3e-4
    train_holdout: float = 0.2
    label_clip: str = "auto"  # label_rules.CLIP_MODES
    label_clip_threshold: float = DEFAULT_CLIP_THRESHOLD
    # Bounds on one request (see the module docstring for the variables).
    request_timeout: float = 30.0
    max_buffered_bytes: int = 256 * 2**20
    max_predict_bytes: int = 16 * 2**20
    max_webhook_bytes: int = 32 * 2**20
    max_setup_bytes: int = 2**20
    max_other_bytes: int = 64 * 2**10
    max_json_containers: int = 200_000
    max_tasks: int = 1000
    max_prompt_chars: int = 1000
    max_prompt_tokens: int = 256
    max_task_prompt_chars: int = 8000
    max_task_prompt_tokens: int = 2048
    max_row_bytes: int = 4 * 2**20
    max_error_chars: int = 1000
    # Set by `vrshq serve` (prometheus_client's multiprocess folder), not by the environment.
    metrics_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("sync_frame_budget", "job_workers", "max_objects", "max_pixels", "max_frames",
                     "max_queued", *BOUNDS):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.train_steps, bool) or not isinstance(self.train_steps, int) or self.train_steps < 1:
            raise ConfigError(f"train_steps must be an integer >= 1, got {self.train_steps!r}")
        if isinstance(self.request_timeout, bool) or not isinstance(self.request_timeout, (int, float)) \
                or not 0 < self.request_timeout <= 3600:
            raise ConfigError(f"request_timeout must be a number of seconds in (0, 3600], got "
                              f"{self.request_timeout!r}")
        if not self.train_lr > 0 or not 0 <= self.train_holdout < 1:
            raise ConfigError(f"train_lr must be > 0 and train_holdout in [0, 1), got "
                              f"{self.train_lr!r} and {self.train_holdout!r}")
        if not 1 <= int(self.keyframe_quality) <= 100:
            raise ConfigError(f"keyframe_quality must be 1..100, got {self.keyframe_quality!r}")
        if isinstance(self.strip_frames, bool) or not isinstance(self.strip_frames, int) \
                or not 0 <= self.strip_frames <= 50:
            raise ConfigError(f"strip_frames must be an integer in 0..50, got {self.strip_frames!r}")
        if isinstance(self.mask_pages, bool) or not isinstance(self.mask_pages, int) \
                or not 0 <= self.mask_pages <= 20:
            raise ConfigError(f"VRSHQ_MASK_PAGES must be an integer in 0..20, got {self.mask_pages!r}")
        if isinstance(self.feature_cache_mb, bool) or not isinstance(self.feature_cache_mb, int) \
                or self.feature_cache_mb < 0:
            raise ConfigError(f"VRSHQ_FEATURE_CACHE_MB must be an integer >= 0, got {self.feature_cache_mb!r}")
        if self.fps_mismatch not in FPS_MISMATCH:
            raise ConfigError(f"VRSHQ_FPS_MISMATCH must be one of {', '.join(FPS_MISMATCH)}, got "
                              f"{self.fps_mismatch!r}")
        if self.label_clip not in CLIP_MODES:
            raise ConfigError(f"VRSHQ_LABEL_CLIP must be one of {', '.join(CLIP_MODES)}, got "
                              f"{self.label_clip!r}")
        if isinstance(self.label_clip_threshold, bool) \
                or not isinstance(self.label_clip_threshold, (int, float)) \
                or not -1.0 <= self.label_clip_threshold <= 1.0:
            raise ConfigError(f"VRSHQ_LABEL_CLIP_THRESHOLD must be a cosine similarity in [-1, 1], "
                              f"got {self.label_clip_threshold!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"VRSHQ_PRECISION must be one of {', '.join(PRECISIONS)}, got "
                              f"{self.precision!r}")
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise ConfigError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        if self.media_url and not self.media_url.startswith(("http://", "https://")):
            raise ConfigError(f"VRSHQ_MEDIA_URL must start with http:// or https://, got "
                              f"{self.media_url!r}")
        if self.label_studio_url and not self.label_studio_url.startswith(("http://", "https://")):
            raise ConfigError(f"LABEL_STUDIO_URL must start with http:// or https://, got "
                              f"{self.label_studio_url!r}")

    @property
    def auth_enabled(self) -> bool:
        """Whether basic auth guards the routes."""
        return bool(self.basic_auth_user)

    def body_limit(self, path: str) -> int:
        """The largest request body (bytes) the route at ``path`` takes."""
        routes = {"/predict": self.max_predict_bytes, "/webhook": self.max_webhook_bytes,
                  "/setup": self.max_setup_bytes}
        return routes.get(path.rstrip("/") or "/", self.max_other_bytes)

    @property
    def data_path(self) -> Path:
        """The backend's data folder as a Path."""
        return Path(self.data_dir)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> BackendConfig:
        """The config from environment variables (see the module docstring); ``overrides`` win."""
        env = os.environ if env is None else env

        def get(*names: str) -> str | None:
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return value
            return None

        def integer(name: str, default: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            try:
                return int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be an integer, got {raw!r}") from None

        def number(name: str, default: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                return float(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None

        def flag(name: str, default: bool) -> bool:
            raw = get(name)
            if raw is None:
                return default
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")

        roots = [r for r in (get("LOCAL_FILES_DOCUMENT_ROOT", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"),)
                 if r]
        roots += [r for r in (get("VRSHQ_MEDIA_ROOTS") or "").split(os.pathsep) if r.strip()]
        values: dict[str, object] = {
            "plugin": get("VRSHQ_PLUGIN") or "vrshq",
            "model_dir": get("VRSHQ_MODEL"),
            "device": get("VRSHQ_DEVICE") or "auto",
            "precision": get("VRSHQ_PRECISION") or "auto",
            "data_dir": get("MODEL_DIR") or "vrshq-data",
            "label_studio_url": (get("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST") or "").rstrip("/") or None,
            "api_key": get("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_ACCESS_TOKEN"),
            "local_roots": tuple(roots),
            "basic_auth_user": get("BASIC_AUTH_USER"),
            "basic_auth_pass": get("BASIC_AUTH_PASS"),
            "sync_frame_budget": integer("VRSHQ_SYNC_FRAMES", 600),
            "job_workers": integer("VRSHQ_JOB_WORKERS", 1),
            "max_objects": integer("VRSHQ_MAX_OBJECTS", 20),
            "max_pixels": integer("VRSHQ_MAX_PIXELS", 4096 * 4096),
            "max_frames": integer("VRSHQ_MAX_FRAMES", 108_000),
            "keyframe_quality": integer("VRSHQ_KEYFRAME_QUALITY", 90),
            "strip_frames": integer("VRSHQ_STRIP_FRAMES", 6),
            "media_url": (get("VRSHQ_MEDIA_URL") or "").rstrip("/") or None,
            "mask_pages": integer("VRSHQ_MASK_PAGES", 2),
            "demand_page": flag("VRSHQ_DEMAND_PAGE", True),
            "feature_cache_mb": integer("VRSHQ_FEATURE_CACHE_MB", 2048),
            "fps_mismatch": get("VRSHQ_FPS_MISMATCH") or "refuse",
            "redis_url": get("REDIS_URL"),
            "queue": get("VRSHQ_QUEUE") or "vrshq",
            "max_queued": integer("VRSHQ_MAX_QUEUED", 100),
            "train_steps": integer("VRSHQ_TRAIN_STEPS", 500),
            "train_lr": number("VRSHQ_TRAIN_LR", 3e-4),
            "train_holdout": number("VRSHQ_TRAIN_HOLDOUT", 0.2),
            "label_clip": (get("VRSHQ_LABEL_CLIP") or "auto").lower(),
            "label_clip_threshold": number("VRSHQ_LABEL_CLIP_THRESHOLD", DEFAULT_CLIP_THRESHOLD),
            "request_timeout": number("VRSHQ_REQUEST_TIMEOUT", cls.request_timeout),
            **{name: integer(var, getattr(cls, name)) for name, var in BOUNDS.items()},
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


__all__ = ["BOUNDS", "FPS_MISMATCH", "BackendConfig", "ConfigError"]
