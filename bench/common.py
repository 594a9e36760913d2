"""What the benchmark scripts share: a Milvus server on loopback, and printing/saving their figures."""

from __future__ import annotations

import json
from pathlib import Path


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
