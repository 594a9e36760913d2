"""The `arcmatch` command line. Only this layer reads the environment and wires the packages together.

Every failure ends as one line on stderr and an exit code from jobs/errors.py; set ARCMATCH_DEBUG=1 for the
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from indexer.store import DEFAULT_EF
from jobs.errors import EXIT_OK, EXIT_PARTIAL, classify, write_error_report

DEFAULT_MILVUS = "./arcmatch.db"


def _milvus_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--milvus", default=os.environ.get("ARCMATCH_MILVUS_URI", DEFAULT_MILVUS),
                   help="Milvus Lite file or server URI (env ARCMATCH_MILVUS_URI; default %(default)s)")
    p.add_argument("--collection", default=os.environ.get("ARCMATCH_COLLECTION", "faces"),
                   help="collection name (env ARCMATCH_COLLECTION; default %(default)s)")


def _ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")


def _spec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="resnet10t", help="any timm model name (default %(default)s)")
    p.add_argument("--embedding-size", type=int, default=512)
    p.add_argument("--input-size", type=int, default=112, help="square input side in pixels (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arcmatch", description="Face identity: train, embed, index, look up.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="Parquet training shards from a tree or manifest, or synthetic faces")
    p.add_argument("--source", help="identity/image tree or CSV manifest (path, identity) to pack into --parquet")
    p.add_argument("--parquet", metavar="OUT", help="write Parquet shards (image bytes, label, identity, path) to OUT")
    p.add_argument("--rows-per-shard", type=int, default=5000)
    p.add_argument("--errors", default="prepare_errors.csv", help="CSV report of files that could not be read")
    p.add_argument("--synthetic", metavar="OUT", help="draw a synthetic identity/image tree into OUT")
    p.add_argument("--identities", type=int, default=100)
    p.add_argument("--images", type=int, default=10, help="images per identity")
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", help="train an embedding model with Ray Train")
    p.add_argument("--data", required=True,
                   help="identity/image tree, CSV manifest (path, identity), or Parquet shards from prepare")
    p.add_argument("--out", required=True, help="directory for the exported embedder checkpoint")
    _spec_args(p)
    p.add_argument("--crop-box", type=float, nargs=4, metavar=("LEFT", "TOP", "RIGHT", "BOTTOM"),
                   help="face region as fractions of the image, cropped before the resize (default: whole image)")
    p.add_argument("--output-stride", type=int, default=16,
                   help="backbone output stride where the model supports it (default %(default)s; 0: the model's own)")
    p.add_argument("--sample-rate", type=float, default=1.0,
                   help="Partial FC: fraction of each worker's class centres used per step (default %(default)s)")
    p.add_argument("--random-shift", type=float, default=0.0,
                   help="augmentation: random translation up to this fraction of the side (default off)")
    p.add_argument("--head", default="arcface", choices=["arcface", "cosface", "sphereface", "combined", "softmax"])
    p.add_argument("--scale", type=float, default=64.0, help="logit scale s")
    p.add_argument("--m1", type=float)
    p.add_argument("--m2", type=float, help="additive angular margin, radians")
    p.add_argument("--m3", type=float, help="additive cosine margin")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128, help="per worker")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (bf16 autocast unless --precision fp32)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="autocast: auto is bf16 on GPUs and fp32 on CPUs")
    p.add_argument("--cpus-per-worker", type=int, default=1)
    p.add_argument("--backbone-weights", help="local file with initial backbone weights")
    p.add_argument("--storage", default="./runs", help="Ray Train storage path for checkpoints")
    p.add_argument("--name", help="run name (default: arcmatch-train-<time>)")
    p.add_argument("--resume", metavar="NAME", help="continue the run NAME in --storage from its latest checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=0, help="steps between checkpoints (0: each epoch)")
    p.add_argument("--max-failures", type=int, default=2, help="worker failures survived from the last checkpoint")
    _ray_args(p)

    p = sub.add_parser("eval", help="verification accuracy and threshold calibration on held-out identities")
    p.add_argument("--model", required=True, help="embedder checkpoint directory")
    p.add_argument("--data", required=True, help="identity/image tree or CSV manifest of held-out identities")
    p.add_argument("--pairs", help="an LFW-style pairs file over --data (10 folds); default: sampled pairs")
    p.add_argument("--flip-tta", action="store_true", help="embed each image with its mirror image")
    p.add_argument("--roc", help="write the ROC curve to this PNG")
    p.add_argument("--far", type=float, default=1e-3, help="target false accept rate (default %(default)g)")
    p.add_argument("--calibrate", action="store_true", help="store the threshold in the checkpoint")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("export", help="export a checkpoint as ONNX (with its spec and calibration)")
    p.add_argument("--model", required=True, help="embedder checkpoint directory")
    p.add_argument("--onnx", required=True, metavar="DIR", help="output directory for model.onnx and spec.json")

    p = sub.add_parser("ingest", help="embed a gallery into Milvus with Ray Data")
    p.add_argument("source", help="identity/image tree, or a CSV/Parquet manifest (uri, identity[, face_id, metadata])")
    p.add_argument("--model", required=True,
                   help="arcmatch checkpoint directory, or an ONNX model with its <name>.spec.json beside it")
    _milvus_args(p)
    p.add_argument("--errors", default="ingest_errors.csv", help="CSV report of skipped files")
    p.add_argument("--export-parquet", help="also write the embeddings to this Parquet file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=1, help="embedding actors")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="Ray CPUs reserved by each embedding actor")
    p.add_argument("--threads-per-actor", type=int,
                   help="inference threads per embedding actor (default: the runtime's, one per core)")
    p.add_argument("--gpus-per-actor", type=float, help="default: 1 when the Ray cluster has GPUs, else 0")
    p.add_argument("--write-concurrency", type=int, help="parallel write tasks (Milvus server only)")
    p.add_argument("--index", default="HNSW", choices=["HNSW", "IVF_FLAT", "DISKANN", "FLAT", "AUTOINDEX"],
                   help="vector index type for a new collection (default %(default)s)")
    _ray_args(p)

    p = sub.add_parser("search", help="identify the face in each image: identity or unknown")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", required=True, help="embedder checkpoint directory")
    _milvus_args(p)
    p.add_argument("--threshold", type=float, help="cosine threshold (default: the model's calibrated one)")
    p.add_argument("--k", type=int, default=10, help="faces retrieved per probe")
    p.add_argument("--ef", type=int, default=int(os.environ.get("ARCMATCH_SEARCH_EF", DEFAULT_EF)),
                   help="HNSW search list size: higher is closer to exact search, and slower (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON lines")

    p = sub.add_parser("serve", help="run the search API (settings from ARCMATCH_* variables; flags override)")
    p.add_argument("--model", help="model directory (env ARCMATCH_MODEL)")
    p.add_argument("--milvus", help="Milvus Lite file or server URI (env ARCMATCH_MILVUS_URI)")
    p.add_argument("--collection", help="collection (env ARCMATCH_COLLECTION)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                   help="uvicorn's event loop (default %(default)s: uvloop when installed)")
    p.add_argument("--ray", action="store_true", help="run as a Ray Serve deployment with dynamic batching")
    p.add_argument("--replicas", type=int, default=1, help="--ray: (minimum) replicas")
    p.add_argument("--max-replicas", type=int, help="--ray: autoscale up to this many replicas")
    p.add_argument("--batch-size", type=int, default=16, help="--ray: dynamic batch size (1 turns batching off)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="--ray: longest wait to fill a batch")
    p.add_argument("--gpus-per-replica", type=float, default=0.0)
    _ray_args(p)

    p = sub.add_parser("apikey", help="create an API key: prints the key once, and its ARCMATCH_API_KEYS entry")
    p.add_argument("name")
    p.add_argument("--scopes", default="read", help="comma separated: read, write (default %(default)s)")
    p = sub.add_parser("submit", help="run train/ingest/eval/prepare/export on a Ray cluster (Ray Jobs API)")
    p.add_argument("job", choices=["train", "ingest", "eval", "prepare", "export"])
    p.add_argument("args", nargs=argparse.REMAINDER, help="the job's own arguments, as for the local command")
    p.add_argument("--address", default=None, help="Ray Jobs API address, http://HEAD:8265 (default RAY_ADDRESS)")
    p.add_argument("--no-follow", action="store_true", help="print the job id and return without waiting")

    p = sub.add_parser("jobs", help="list, inspect, read the logs of, or stop jobs on a Ray cluster")
    p.add_argument("action", choices=["list", "status", "logs", "stop"])
    p.add_argument("job_id", nargs="?")
    p.add_argument("--address", default=None, help="Ray Jobs API address (default RAY_ADDRESS)")

    p = sub.add_parser("demo", help="end to end on the embedded defaults: data, training, gallery, lookups")
    p.add_argument("--data", help="a real identity/image tree instead of synthetic faces")
    p.add_argument("--workdir", default="./demo-work")
    p.add_argument("--size", default="default", choices=["default", "tiny"])
    p.add_argument("--far", type=float, help="pair false accept rate for the threshold (default: from --fpir)")
    p.add_argument("--fpir", type=float, default=0.02,
                   help="target rate of unknown probes accepted; sets FAR = FPIR / gallery faces (default %(default)g)")
    p.add_argument("--seed", type=int, default=0)
    return parser


def cmd_prepare(args: argparse.Namespace) -> int:
    if args.parquet:
        return _prepare_parquet(args)
    if not args.synthetic:
        raise ValueError("prepare needs --synthetic OUT, or --source TREE --parquet OUT")
    from trainer.synthetic import write_dataset

    paths = write_dataset(args.synthetic, range(args.identities), args.images, seed=args.seed, size=args.size)
    print(f"wrote {len(paths)} images of {args.identities} identities to {args.synthetic}")
    return EXIT_OK


def _prepare_parquet(args: argparse.Namespace) -> int:
    from trainer.data import list_images
    from trainer.shards import write_shards

    if not args.source:
        raise ValueError("prepare --parquet needs --source (an identity/image tree or a CSV manifest)")
    summary = write_shards(list_images(args.source), args.parquet, args.rows_per_shard)
    print(f"wrote {summary.rows} images of {summary.classes} identities in {summary.shards} shard(s) to {args.parquet}")
    if summary.skipped:
        write_error_report(args.errors, summary.skipped)
        print(f"{len(summary.skipped)} file(s) skipped; see {args.errors}")
        return EXIT_PARTIAL
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from embedder.model import with_output_stride
    from embedder.spec import ModelSpec
    from jobs.runtime import init_ray
    from trainer.config import TrainConfig
    from trainer.ray_loop import fit

    margins = {k: v for k, v in (("m1", args.m1), ("m2", args.m2), ("m3", args.m3)) if v is not None}
    spec = ModelSpec(args.backbone, args.embedding_size, (args.input_size, args.input_size),
                     crop_box=tuple(args.crop_box) if args.crop_box else None)
    if args.output_stride:
        spec, note = with_output_stride(spec, args.output_stride)
        print(note)
    config = TrainConfig(data=str(Path(args.data).resolve()), spec=spec, head=args.head, scale=args.scale,
                         margins=margins, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                         lr=args.lr, workers=args.workers, gpu=args.gpu, precision=args.precision,
                         cpus_per_worker=args.cpus_per_worker,
                         backbone_weights=args.backbone_weights, checkpoint_every=args.checkpoint_every,
                         max_failures=args.max_failures, sample_rate=args.sample_rate,
                         random_shift=args.random_shift)
    if args.resume and not (Path(args.storage) / args.resume).is_dir():
        raise FileNotFoundError(f"no run {args.resume!r} in {args.storage} to resume")
    init_ray(args.address)
    result = fit(config, args.out, storage=args.storage, name=args.resume or args.name)
    last = result.history[-1]
    print(f"trained {spec.backbone}: loss {result.history[0]['loss']:.3f} -> {last['loss']:.3f}, "
          f"{last['images_per_s']:.0f} img/s, {len(result.skipped)} images skipped; checkpoint in {args.out}")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from embedder.embed import open_embedder
    from trainer.data import list_images
    from trainer.evaluate import calibrate, evaluate_pairs

    embedder = open_embedder(args.model)
    embedder.flip_tta = args.flip_tta
    if args.pairs:
        verification, calibration, scores = evaluate_pairs(embedder, args.pairs, args.data, args.far)
    else:
        verification, calibration, scores = calibrate(embedder, list_images(args.data), args.far, args.seed)
    print(f"verification: {100 * verification.accuracy_mean:.2f}% +- {100 * verification.accuracy_std:.2f} "
          f"({verification.folds}-fold), ROC AUC {verification.auc:.4f}")
    for far, tar in verification.tar_at_far.items():
        print(f"TAR {tar:.4f} at FAR {far:g}")
    print(f"threshold {calibration.threshold:.4f} at FAR {calibration.measured_far:.5f} "
          f"(target {calibration.target_far:g}), TAR {calibration.tar:.3f}, {calibration.pairs} pairs")
    if args.roc:
        from trainer.evaluate import plot_roc

        print(f"ROC curve in {plot_roc(*scores, args.roc, title=f'arcmatch eval: {Path(args.model).name}')}")
    if args.calibrate:
        calibration.save(args.model)
        print(f"stored the threshold in {args.model}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    import numpy as np

    from embedder.checkpoint import load_embedder
    from embedder.embed import TorchEmbedder
    from embedder.export import export_onnx
    from embedder.onnx import OnnxEmbedder

    model = load_embedder(args.model)
    path = export_onnx(model, args.onnx, calibration_from=args.model)
    images = np.random.default_rng(0).integers(0, 256, size=(8, *model.spec.input_size, 3), dtype=np.uint8)
    diff = np.abs(OnnxEmbedder.from_path(args.onnx).embed(images) - TorchEmbedder(model).embed(images)).max()
    print(f"wrote {path} (max abs difference from torch on 8 random images: {diff:.2e})")
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    from jobs.ingest import ingest
    from jobs.runtime import init_ray

    init_ray(args.address)
    summary = ingest(args.source, args.model, milvus=args.milvus, token=os.environ.get("ARCMATCH_MILVUS_TOKEN"),
                     collection=args.collection, batch_size=args.batch_size, embed_concurrency=args.concurrency,
                     cpus_per_actor=args.cpus_per_actor, threads_per_actor=args.threads_per_actor,
                     gpus_per_actor=args.gpus_per_actor, write_concurrency=args.write_concurrency,
                     index_type=args.index, errors_csv=args.errors, export_parquet=args.export_parquet)
    print("\n".join(summary.lines()))
    if summary.skipped:
        print(f"skipped files and reasons are listed in {args.errors}", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    from embedder.embed import open_embedder
    from indexer.store import FaceIndex, connect
    from jobs.lookup import Lookup

    index = FaceIndex(connect(args.milvus, os.environ.get("ARCMATCH_MILVUS_TOKEN")), args.collection,
                      search_ef=args.ef)
    lookup = Lookup(open_embedder(args.model), index, k=args.k)
    decisions = lookup.identify_images([Path(p).read_bytes() for p in args.images], args.threshold)
    for path, decision in zip(args.images, decisions, strict=True):
        if args.json:
            print(json.dumps({"image": path, "identity": decision.identity, "score": decision.score,
                              "threshold": decision.threshold,
                              "candidates": [{"identity": c.identity, "score": c.score}
                                             for c in decision.candidates[:5]]}))
        else:
            verdict = decision.identity if decision.is_match else "unknown"
            print(f"{path}\t{verdict}\tscore {decision.score:.4f} (threshold {decision.threshold:.4f})")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from jobs.demo import SIZES, run_demo
    from jobs.runtime import init_ray

    init_ray()
    report = run_demo(args.workdir, data=args.data, size=SIZES[args.size], target_far=args.far,
                      target_fpir=args.fpir, seed=args.seed)
    print("\n".join(report.lines()))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from jobs.settings import Settings

    overrides = {k: v for k, v in (("model", args.model), ("milvus_uri", args.milvus),
                                   ("collection", args.collection)) if v is not None}
    try:
        settings = Settings(**overrides)
    except Exception as exc:  # pydantic's ValidationError: name the missing settings in one line
        missing = ", ".join(f"ARCMATCH_{'_'.join(map(str, e['loc'])).upper()}" for e in exc.errors())
        raise ValueError(f"settings incomplete or invalid: {missing}") from exc
    if args.ray:
        return _serve_ray(args, settings)
    import uvicorn

    from jobs.api import create_app

    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info", loop=args.loop)
    return EXIT_OK


def _serve_ray(args: argparse.Namespace, settings) -> int:
    from ray import serve

    from indexer.store import is_lite_uri
    from jobs.runtime import init_ray
    from jobs.serve_deploy import build_application

    max_replicas = args.max_replicas or args.replicas
    if is_lite_uri(settings.milvus_uri) and max_replicas > 1:
        raise ValueError("Milvus Lite opens its file from one process only: use one replica, or a Milvus server")
    init_ray(args.address)
    serve.start(http_options={"host": args.host, "port": args.port})
    application = build_application(settings, min_replicas=args.replicas, max_replicas=max_replicas,
                                    max_batch_size=args.batch_size, batch_wait_timeout_s=args.batch_wait_ms / 1000,
                                    num_gpus=args.gpus_per_replica)
    serve.run(application, name="arcmatch", route_prefix="/", blocking=True)
    return EXIT_OK


def cmd_apikey(args: argparse.Namespace) -> int:
    from jobs.apikeys import new_key

    key, entry = new_key(args.name, [s.strip() for s in args.scopes.split(",") if s.strip()])
    print(f"key (shown once, give it to the client): {key}")
    print(f"add to ARCMATCH_API_KEYS (comma separated): {entry}")
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    from jobs.submit import submit

    return submit(args.address, args.job, args.args, follow=not args.no_follow)


def cmd_jobs(args: argparse.Namespace) -> int:
    from jobs.submit import manage

    return manage(args.address, args.action, args.job_id)


COMMANDS = {"prepare": cmd_prepare, "train": cmd_train, "eval": cmd_eval, "export": cmd_export, "ingest": cmd_ingest,
            "search": cmd_search, "serve": cmd_serve, "apikey": cmd_apikey, "submit": cmd_submit,
            "jobs": cmd_jobs, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("arcmatch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the edge: every error becomes one line and an exit code
        code, _, kind = classify(exc)
        if os.environ.get("ARCMATCH_DEBUG"):
            traceback.print_exc()
        print(f"arcmatch {args.command}: {kind}: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
