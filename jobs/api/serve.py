"""`arcmatch serve --ray`: the same FastAPI app as a Ray Serve deployment, with replicas and dynamic batching.

Each replica builds its own service (model and Milvus client) in its constructor; nothing heavy is pickled from
the driver. Requests inside a replica are batched (jobs/api/batching.py); replicas scale between min and max with
the number of ongoing requests. The replicas of one node count into one shared metrics directory, named once per
application here and made on each node by the replicas themselves (jobs/api/metrics.py).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from typing import Any

from ray import serve

from common.errors import BadInput
from jobs.api.app import create_app
from jobs.settings import Settings

# The replica's own (service, batcher). A module global, not a closure: Ray pickles the FastAPI app and the
# deployment class separately, so a shared closure would not be shared in the replica.
_REPLICA: dict[str, Any] = {}


def _replica_provider() -> tuple[Any, Any]:
    return _REPLICA["current"]


def build_application(settings: Settings, *, min_replicas: int = 1, max_replicas: int = 1,
                      max_batch_size: int = 16, batch_wait_timeout_s: float = 0.005,
                      num_cpus: float = 1.0, num_gpus: float = 0.0, target_ongoing_requests: int = 8,
                      metrics_dir: str | None = None):
    """A Serve application ready for serve.run(); autoscaling when max_replicas > min_replicas. The replicas of a
    node count into `metrics_dir` (default: a fresh name under each node's temporary directory)."""
    app = create_app(settings, provider=_replica_provider)
    keys = app.state.keys  # what the node metrics port admits, as the app's /metrics does

    if max_replicas > min_replicas:
        scaling: dict[str, Any] = {"autoscaling_config": {"min_replicas": min_replicas, "max_replicas": max_replicas,
                                                          "target_ongoing_requests": target_ongoing_requests}}
    else:
        scaling = {"num_replicas": min_replicas}

    actor_options: dict[str, Any] = {"num_cpus": num_cpus, "num_gpus": num_gpus}
    if settings.metrics:
        from jobs.api.metrics import SHARED_DIR_VARIABLE

        shared = metrics_dir or os.path.join(tempfile.gettempdir(), f"arcmatch-metrics-{uuid.uuid4().hex[:12]}")
        actor_options["runtime_env"] = {"env_vars": {SHARED_DIR_VARIABLE: shared}}

    @serve.deployment(name="arcmatch", ray_actor_options=actor_options,
                      max_ongoing_requests=max(64, 4 * max_batch_size), **scaling)
    @serve.ingress(app)
    class ArcmatchAPI:
        def __init__(self) -> None:
            import jobs.api.serve as this_module  # the imported module, not cloudpickle's copy of its globals
            from jobs.api.app import build_service
            from jobs.api.batching import Batcher

            service = build_service(settings)
            batcher = Batcher(service, max_batch_size, batch_wait_timeout_s) if max_batch_size > 1 else None
            this_module._REPLICA["current"] = (service, batcher)
            if settings.metrics and settings.metrics_port:
                from jobs.api.metrics import observe_ready
                from jobs.api.node_metrics import serve_node_metrics

                serve_node_metrics(settings.metrics_port, lambda: observe_ready(service, settings.gallery), keys)

    return ArcmatchAPI.bind()


def app_builder(args: dict[str, Any]):
    """Serve's application builder (serveConfigV2 `import_path: jobs.api.serve:app_builder`, as in the RayService
    manifest): settings from the ARCMATCH_* environment, sizes from the config's `args`."""
    known = {"min_replicas", "max_replicas", "max_batch_size", "batch_wait_ms", "num_cpus", "num_gpus"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise BadInput(f"unknown arcmatch serve args {unknown}; known: {sorted(known)}")
    minimum = int(args.get("min_replicas", 1))
    return build_application(Settings.load(), min_replicas=minimum, max_replicas=int(args.get("max_replicas", minimum)),
                             max_batch_size=int(args.get("max_batch_size", 16)),
                             batch_wait_timeout_s=float(args.get("batch_wait_ms", 5)) / 1000,
                             num_cpus=float(args.get("num_cpus", 1)), num_gpus=float(args.get("num_gpus", 0)))
