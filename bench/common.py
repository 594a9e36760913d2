"""What the benchmark scripts share: a Milvus server on loopback, and printing/saving their figures."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np


def start_milvus_server(base_dir: Path):
    """The PyPI `milvus` package's standalone server on loopback: (server, uri). The caller stops it."""
    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(base_dir))
    server.start()
    return server, f"http://127.0.0.1:{server.listen_port}"


def emit(result: dict, out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text)


def latencies(call: Callable, items: Iterable) -> list[float]:
    """Seconds each `call(item)` took, one after another (one client)."""
    out = []
    for item in items:
        started = time.perf_counter()
        call(item)
        out.append(time.perf_counter() - started)
    return out


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
