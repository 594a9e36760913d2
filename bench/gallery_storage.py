"""Many galleries in one deployment: a Milvus collection per gallery against one collection with a partition key.

    .venv/bin/python bench/gallery_storage.py --galleries 1000 --faces 1000 --server   # the Milvus 2.3 server
    .venv/bin/python bench/gallery_storage.py --galleries 1000 --faces 1000            # Milvus Lite (a file)

For each layout: the time to create the galleries and fill them (`faces` unit vectors each, FLAT index as
arcmatch makes for galleries of this size), the first search of a gallery just made, search p50/p99 over random
galleries (one client, a probe near a face of that gallery, top 10), whether every answer came from the gallery
asked (isolation), the store's resident memory (the server's process, or this process for Lite, which runs in
it), and the first error either layout ran into. A layout that fails stops there and says so: that is a figure
too. Writes a JSON line of figures (with --out, to that file as well).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit, milvus_store, percentiles  # noqa: E402

DIM = 128


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process, from /proc (Linux)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                out[int(entry.name)] = (parent, (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except (OSError, ValueError, IndexError):
                continue
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its descendants, in MiB."""
    table, family = _processes(), {pid}
    while grown := {p for p, (parent, _) in table.items() if parent in family} - family:
        family |= grown
    total = 0
    for member in family:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return round(total / 1024, 1)


def schema(client, partition_key: bool):
    from pymilvus import DataType

    fields = client.create_schema(auto_id=False, enable_dynamic_field=False)
    fields.add_field("face_id", DataType.INT64, is_primary=True)
    if partition_key:
        fields.add_field("gallery", DataType.VARCHAR, max_length=64, is_partition_key=True)
    fields.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
    return fields, index


def per_collection(client, galleries: int, faces: int, rng, probes: int) -> dict:
    """A collection per gallery: what arcmatch does for its one gallery today (with an alias per gallery)."""
    fields, index = schema(client, partition_key=False)
    started, first = time.perf_counter(), None
    for g in range(galleries):
        name = f"g{g}"
        client.create_collection(name, schema=fields, index_params=index)
        client.insert(name, [{"face_id": g * faces + i, "vector": v} for i, v in enumerate(unit(rng, faces))])
        if g == 0:
            t = time.perf_counter()
            client.search(name, data=[unit(rng, 1)[0]], limit=10, output_fields=["face_id"])
            first = time.perf_counter() - t
        if (g + 1) % 100 == 0:
            print(f"  collections: {g + 1}/{galleries} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    created = time.perf_counter() - started
    seconds, foreign = [], 0
    for _ in range(probes):
        g = int(rng.integers(galleries))
        t = time.perf_counter()
        hits = client.search(f"g{g}", data=[unit(rng, 1)[0]], limit=10, output_fields=["face_id"])[0]
        seconds.append(time.perf_counter() - t)
        foreign += sum(not (g * faces <= h["face_id"] < (g + 1) * faces) for h in hits)
    return {"create_and_fill_s": round(created, 1), "first_search_ms": round(first * 1000, 2),
            "search": percentiles(seconds), "foreign_hits": foreign}


def partition_key(client, galleries: int, faces: int, rng, probes: int) -> dict:
    """One collection, the gallery a partition key: each search filters on it."""
    fields, index = schema(client, partition_key=True)
    started = time.perf_counter()
    client.create_collection("all_galleries", schema=fields, index_params=index)
    for g in range(galleries):
        client.insert("all_galleries", [{"face_id": g * faces + i, "gallery": f"g{g}", "vector": v}
                                        for i, v in enumerate(unit(rng, faces))])
        if (g + 1) % 100 == 0:
            print(f"  partition key: {g + 1}/{galleries} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    created = time.perf_counter() - started
    seconds, foreign = [], 0
    for _ in range(probes):
        g = int(rng.integers(galleries))
        t = time.perf_counter()
        hits = client.search("all_galleries", data=[unit(rng, 1)[0]], limit=10, filter=f'gallery == "g{g}"',
                             output_fields=["face_id"])[0]
        seconds.append(time.perf_counter() - t)
        foreign += sum(not (g * faces <= h["face_id"] < (g + 1) * faces) for h in hits)
    return {"create_and_fill_s": round(created, 1), "first_search_ms": round(seconds[0] * 1000, 2),
            "search": percentiles(seconds), "foreign_hits": foreign}


def run(uri: str, layout: str, args, server_pid: int | None) -> dict:
    from pymilvus import MilvusClient

    client = MilvusClient(uri)
    rng = np.random.default_rng(0)
    measure = per_collection if layout == "collection_per_gallery" else partition_key
    try:
        result = measure(client, args.galleries, args.faces, rng, args.probes)
    except Exception as exc:  # the limit a layout runs into is the figure
        result = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
    result["rss_mb"] = rss_mb(server_pid or os.getpid())
    for name in client.list_collections():
        client.drop_collection(name)
    client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--galleries", type=int, default=1000)
    parser.add_argument("--faces", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--server", action="store_true", help="the `milvus` package's server on loopback")
    parser.add_argument("--layouts", default="partition_key,collection_per_gallery")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gallery-storage-"))
    result = {"store": "server" if args.server else "lite", "galleries": args.galleries, "faces": args.faces,
              "dim": DIM}
    for layout in args.layouts.split(","):
        # a store of its own per layout, so neither inherits the other's memory
        with milvus_store(str(work / f"{layout}.db"), work / f"server-{layout}" if args.server else None) as uri:
            pid = _server_pid() if args.server else None
            result[layout] = run(uri, layout, args, pid)
        print(f"{layout}: {result[layout]}", file=sys.stderr)
    emit(result, args.out)


def _server_pid() -> int | None:
    """The `milvus run standalone` process the server package started."""
    found = [pid for pid, (_, command) in _processes().items() if "milvus run standalone" in command]
    return found[0] if found else None


if __name__ == "__main__":
    main()
