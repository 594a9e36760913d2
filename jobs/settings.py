"""The one configuration of arcmatch: typed, from ARCMATCH_* variables (or a .env file), then flags override.

Every command of the CLI and the API build their settings here (`Settings.load(**flags)`), so the two agree on
every default and a deployment sets each value once (k8s/base/arcmatch.env). Secrets have no default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import BadInput
from indexer.store import DEFAULT_EF

OLD_AUDIT_DIR = "./arcmatch-audit"  # the audit trail's default for a server, and for every store before


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARCMATCH_", env_file=".env", extra="ignore", populate_by_name=True)

    model: Path | None = None  # an arcmatch checkpoint directory or an ONNX model directory
    api_keys: SecretStr | None = None  # name:scopes:sha256 entries; see jobs/api/keys.py
    # a client's side: the commands that can go through a running service (`--api URL`) and the key they send
    api_url: str | None = None
    api_key: SecretStr | None = None
    milvus_uri: str = "./arcmatch.db"  # a Milvus Lite file, or a server's http://host:19530
    milvus_token: SecretStr | None = None
    # the gallery's name: a Milvus alias over one collection per model (indexer/galleries.py); its old name,
    # `collection` (ARCMATCH_COLLECTION, Settings(collection=...)), still works
    gallery: str = Field("faces", validation_alias=AliasChoices("ARCMATCH_GALLERY", "ARCMATCH_COLLECTION"))
    search_k: int = Field(20, ge=1, le=16384)  # faces retrieved per probe
    search_ef: int = Field(DEFAULT_EF, ge=1, le=32768)  # HNSW search list size; see indexer.store.FaceIndex
    search_consistency: Literal["Strong", "Session", "Bounded", "Eventually"] = "Session"  # see FaceIndex
    max_upload_bytes: int = Field(8 * 1024 * 1024, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    max_batch_vectors: int = Field(64, ge=1)
    # the API's edge (jobs/api/guard.py): limits checked before a request costs anything
    max_images_per_request: int = Field(16, ge=1)  # photos in one enrollment
    max_json_bytes: int = Field(2 * 1024 * 1024, ge=1)  # any body that is not an upload
    request_timeout_s: float = Field(30.0, gt=0)  # past it the caller gets 503 with Retry-After
    open_galleries: int = Field(64, ge=1)  # the API: galleries other than the default kept open in one process
    max_connections: int = Field(1000, ge=1)  # `arcmatch serve`: connections and requests in flight; beyond, 503
    decode_concurrency: int = Field(4, ge=1)  # photos decoded at once per process: bounds memory (40 MP: ~120 MB)
    cors_origins: list[str] = []  # browsers' cross-origin access: off unless origins are listed
    log_format: Literal["text", "json"] = "text"  # `arcmatch serve`'s logs; json: one object a line, request ids
    metrics: bool = True  # GET /metrics for Prometheus (jobs/api/metrics.py); off: no route, nothing counted
    # Ray Serve: each node also serves the sum of its replicas' metrics on this port (jobs/api/node_metrics.py)
    metrics_port: int | None = Field(None, ge=1, le=65535)
    # a long job's progress and final counts (jobs/job_metrics.py): served on a port while it runs, and/or pushed
    job_metrics_port: int | None = Field(None, ge=1, le=65535)
    pushgateway: str | None = None  # a Prometheus Pushgateway, e.g. http://pushgateway:9091
    # the face archive (indexer/archive.py): every face's image kept for re-embedding with the next model
    archive: bool = True
    archive_uri: str | None = None  # default: beside a Lite file (faces.db -> faces.archive), else ./arcmatch-archive
    # the audit trail (jobs/audit.py): every write, and searches when audit_searches is on
    # a directory, or a pyarrow filesystem URI (s3://bucket/audit); default: beside a Lite file (faces.db ->
    # faces.audit), so one gallery's trail is in one place whatever directory a command runs from; else ./arcmatch-audit
    audit_dir: str | None = None
    audit_retention_days: int = Field(365, ge=1)
    audit_searches: bool = False
    # a face enrolled or named that matches another identity above the threshold is a 409 unless `proceed`
    enroll_conflict_check: bool = True
    # faces a search answered "unknown" for, kept unlabelled for `arcmatch cluster` (personal data: off by default)
    keep_unknown_faces: bool = False
    unknown_retention_days: float = Field(30.0, gt=0)  # kept faces nobody named are deleted after this
    ray_address: str | None = Field(None, validation_alias=AliasChoices("ARCMATCH_RAY_ADDRESS", "RAY_ADDRESS"))
    # a gallery calibration that no longer meets its target at the gallery's size now is made again (same target,
    # same method); the size is counted at most every calibration_check_s (jobs/calibration_watch.py)
    recalibrate_on_growth: bool = True
    calibration_check_s: float = Field(300.0, gt=0)
    # faces in raw photos (models whose spec has alignment "five_point"; see embedder/faces.py)
    detector: Path | None = None  # a YuNet .onnx file
    detector_score: float = Field(0.7, gt=0, le=1)  # detections below this score are not faces
    # enrollment and labelled ingestion: faces taken per photo ("all" only for unlabelled faces: `ingest --faces`)
    face_select: Literal["one", "largest"] = "one"
    face_rotations: list[Literal[90, 180, 270]] = [90, 180, 270]  # turns tried when a photo shows no face
    min_face_px: int = Field(32, ge=0)  # quality gate: the face box's shorter side
    min_face_score: float = Field(0.75, ge=0, le=1)  # quality gate: detection score
    min_sharpness: float = Field(25.0, ge=0)  # quality gate: variance of the Laplacian of the aligned face

    @model_validator(mode="before")
    @classmethod
    def _old_gallery_keyword(cls, values):
        """Settings(collection=...), the gallery's old name: a keyword, so it outranks the environment (whose
        ARCMATCH_GALLERY or ARCMATCH_COLLECTION arrive here as such keys), and gallery=... outranks it."""
        if isinstance(values, dict) and "collection" in values:
            values = {k: v for k, v in values.items() if k not in ("ARCMATCH_GALLERY", "ARCMATCH_COLLECTION")}
            values.setdefault("gallery", values.pop("collection"))
        return values

    @field_validator("model", "detector", mode="before")
    @classmethod
    def _unset_when_empty(cls, value):  # ARCMATCH_DETECTOR= is no detector, not the working folder as Path("")
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("audit_dir", mode="before")
    @classmethod
    def _location(cls, value):  # a Path is welcome; the field stays a string so that s3://... keeps its slashes
        return str(value) if isinstance(value, Path) else value

    @classmethod
    def load(cls, **flags) -> Settings:
        """The environment, overridden by the flags that were given (None means "not given")."""
        given = {k: v for k, v in flags.items() if v is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            problems = "; ".join(f"{_variable(e['loc'])}: {e['msg']}" for e in exc.errors())
            raise BadInput(f"settings invalid: {problems}") from None

    def require(self, *names: str) -> Settings:
        """Check that the settings a command cannot run without are set, naming every missing one at once."""
        hints = {"model": " (--model DIR)", "api_keys": " (create one with `arcmatch apikey NAME`)",
                 "detector": " (--detector YUNET.onnx)"}
        missing = [f"{_variable((name,))}{hints.get(name, '')}" for name in names if not _is_set(getattr(self, name))]
        if missing:
            raise BadInput(f"settings missing: {', '.join(missing)}")
        return self

    def archive_root(self) -> str | None:
        """Where the face archive lives, or None when archiving is off."""
        if not self.archive:
            return None
        if self.archive_uri:
            return self.archive_uri
        if "://" not in self.milvus_uri:
            return str(Path(self.milvus_uri).with_suffix(".archive"))
        return "./arcmatch-archive"

    def audit_root(self) -> str:
        """Where the audit trail is written and read (audit_dir, or its default beside a Lite file)."""
        if self.audit_dir:
            return self.audit_dir
        if "://" not in self.milvus_uri:
            return str(Path(self.milvus_uri).with_suffix(".audit"))
        return OLD_AUDIT_DIR

    @property
    def model_dir(self) -> Path:
        return self.require("model").model

    def face_policy(self, select: str | None = None, *, gate: bool = True, threads: int | None = None):
        """The one FacePolicy these settings describe; `select` overrides face_select (search takes "all"),
        gate=False keeps the detector's threshold only (an enrollment that overrides the quality gate), `threads`
        bounds the detector's threads (one in a Ray decode task that has one CPU)."""
        from embedder.detect import open_detector
        from embedder.faces import FacePolicy
        from embedder.quality import QualityGate

        quality = QualityGate(self.min_face_px, self.min_face_score, self.min_sharpness) if gate else QualityGate.open()
        detector = (open_detector(self.detector, score_threshold=self.detector_score, threads=threads)
                    if self.detector else None)
        return FacePolicy(detector, quality, select or self.face_select, tuple(self.face_rotations))

    def environment(self) -> dict[str, str]:
        """The ARCMATCH_* variables that give another process these settings (the ones set, however they were
        given): how `arcmatch serve --workers` hands its flags to the worker processes."""
        import json

        def text(value) -> str:
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, bool):
                return "true" if value else "false"
            return json.dumps(value) if isinstance(value, list | dict) else str(value)

        return {_variable((name,)): text(getattr(self, name)) for name in sorted(self.model_fields_set)
                if getattr(self, name) is not None}

    def token(self) -> str | None:
        return self.milvus_token.get_secret_value() if self.milvus_token else None


def _is_set(value) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is not None and str(value).strip() != ""


def _variable(loc: tuple) -> str:
    return "ARCMATCH_" + "_".join(str(part) for part in loc).upper()


def carried_environment(environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(the ARCMATCH_* variables a job submitted to a cluster should run with, the names left out as secrets):
    every setting this process was given through the environment, except the secret ones (API keys, the Milvus
    token), which a cluster must hold itself rather than receive in a job's description."""
    secret = {_variable((name,)) for name, info in Settings.model_fields.items() if info.annotation is not None
              and "SecretStr" in str(info.annotation)}
    given = {k: v for k, v in environ.items() if k.startswith("ARCMATCH_")}
    return {k: v for k, v in given.items() if k not in secret}, sorted(k for k in given if k in secret)

