"""The service's settings, typed, from the environment (ARCMATCH_*) or a .env file. Secrets have no default."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from indexer.store import DEFAULT_EF


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARCMATCH_", env_file=".env", extra="ignore")

    model: Path  # checkpoint directory or ONNX model directory
    api_keys: SecretStr  # name:scopes:sha256 entries; see jobs/apikeys.py
    milvus_uri: str = "./arcmatch.db"
    milvus_token: SecretStr | None = None
    collection: str = "faces"
    max_upload_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 40_000_000
    search_k: int = 20
    search_consistency: str = "Session"  # see indexer.store.FaceIndex
    search_ef: int = DEFAULT_EF  # HNSW search list size; see indexer.store.FaceIndex
    max_batch_vectors: int = 64
