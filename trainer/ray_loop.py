"""The Ray Train job: TorchTrainer around trainer.step, one to many workers, CPU or GPU.

Each worker decodes the image tree once, then every epoch takes its own slice of one shared permutation (the
same seed on every rank), cut to the same number of full batches on every worker so DDP never waits on a rank
with fewer steps. Rank 0 writes the embedder checkpoint and the per-epoch history.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig, WorkerGroupError
from ray.train.torch import TorchTrainer, prepare_model
from torch import nn

from common.errors import ArcmatchError, BadInput
from embedder.checkpoint import load_embedder, save_embedder
from embedder.model import check_backbone, with_output_stride
from embedder.sources import list_images
from trainer.average import WeightAverage
from trainer.config import TrainConfig
from trainer.feed import MemoryFeed, StreamFeed
from trainer.heads import CombinedMarginHead
from trainer.progress import ProgressBoard, run_with_progress
from trainer.resume import ahead, newest_complete, remove_unkept
from trainer.run_record import check_or_record, new_run_name
from trainer.shards import decode_spec, is_shard_dir, shard_spec
from trainer.state import Position, load_state, save_state
from trainer.step import (
    TrainModule,
    autocast_dtype,
    build_module,
    build_optimizer,
    build_scheduler,
    make_batch,
    train_step,
)

HISTORY_FILE = "history.json"


def train_loop_per_worker(loop_config: dict) -> None:
    """loop_config: {"config": TrainConfig as a dict, "stream_rows": rows of the streamed dataset, 0 in memory,
    "board": a trainer.progress.ProgressBoard handle or None}."""
    config = TrainConfig.from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    board = loop_config.get("board") if rank == 0 else None
    if not config.gpu:
        torch.set_num_threads(config.cpus_per_worker)
    torch.manual_seed(config.seed)
    device = ray.train.torch.get_device()

    if loop_config["stream_rows"]:  # Parquet shards, streamed by Ray Data
        feed = StreamFeed(config, world, ray.train.get_dataset_shard("train"), loop_config["stream_rows"], device)
    else:
        feed = MemoryFeed(config, rank, world)
    steps_per_epoch = feed.steps_per_epoch
    # on its device before the optimizer state is loaded
    train_module = build_module(config, len(feed.classes), rank=rank, world=world).to(device)
    optimizer = build_optimizer(train_module, config)
    scheduler = build_scheduler(optimizer, int(config.warmup_epochs * steps_per_epoch),
                                steps_per_epoch * config.epochs)
    # rank 0 alone averages: it writes the exported model, and DDP keeps every rank's embedder the same
    average = WeightAverage(train_module.embedder, config.average_decay) if config.average_decay and rank == 0 else None
    position, history = Position(0, 0), []
    restored = ray.train.get_checkpoint()
    newest = loop_config.get("newest")  # a complete checkpoint on disk that Ray's snapshot may not list
    if restored is not None:  # a resumed run, or a restart after a worker died
        with restored.as_directory() as directory:
            if not ahead(newest, directory):
                position, history = load_state(directory, train_module, optimizer, average)
                newest = None
    if newest is not None:
        position, history = load_state(newest, train_module, optimizer, average)
    per_step = config.batch_size * world
    start_step = position.samples // per_step
    fast_forward(scheduler, position.epoch * steps_per_epoch + start_step)
    module = wrap_for_ddp(train_module)
    autocast = autocast_dtype(config.precision, device.type)

    for epoch in range(position.epoch, config.epochs):
        first = start_step if epoch == position.epoch else 0
        rng = np.random.default_rng([config.seed, rank, epoch, first])
        losses, accuracies, started = [], [], time.perf_counter()
        for step, (images, labels) in enumerate(feed.epoch(epoch, first), start=first):
            x, y = make_batch(images, labels, config.spec, rng, shift=config.random_shift, erase=config.random_erase,
                              channels_last=config.channels_last)
            loss, acc = train_step(module, optimizer, scheduler, x.to(device), y.to(device),
                                   autocast_dtype=autocast, clip_grad_norm=config.clip_grad_norm)
            if average is not None:
                average.update(train_module.embedder)
            losses.append(loss)
            accuracies.append(acc)
            done = step + 1 - first
            if board is not None and config.log_every and done % config.log_every == 0:
                recent = slice(-config.log_every, None)
                _post(board, config, epoch, epoch * steps_per_epoch + step + 1, steps_per_epoch,
                      np.mean(losses[recent]), np.mean(accuracies[recent]),
                      done * per_step / (time.perf_counter() - started))
            if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < steps_per_epoch:
                metrics = {"epoch": epoch + 1, "step": step + 1, "loss": float(np.mean(losses[-done:]))}
                _report(rank, metrics, train_module, optimizer, Position(epoch, (step + 1) * per_step), history,
                        feed, with_model=False, average=average)
        seconds = time.perf_counter() - started
        skipped = feed.skipped()
        history.append({
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "accuracy": float(np.mean(accuracies)) if accuracies else float("nan"),
            "images_per_s": len(losses) * per_step / seconds,
            "lr": scheduler.get_last_lr()[0],
            "steps": len(losses),
            "skipped_images": len(skipped),
            "resumed_at_step": first or None,
            "precision": "bf16" if autocast is torch.bfloat16 else "fp32",
        })
        _report(rank, history[-1], train_module, optimizer, Position(epoch + 1, 0), history, feed, with_model=True,
                skipped=skipped, average=average)
        if board is not None:
            last = history[-1]
            _post(board, config, epoch, (epoch + 1) * steps_per_epoch, steps_per_epoch, last["loss"],
                  last["accuracy"], last["images_per_s"])


def _post(board, config: TrainConfig, epoch: int, step: int, steps_per_epoch: int, loss: float, accuracy: float,
          images_per_s: float) -> None:
    """Rank 0's progress for the driver's bar (trainer/progress.py); fire and forget."""
    board.post.remote({"epoch": epoch + 1, "epochs": config.epochs, "step": step,
                       "steps": config.epochs * steps_per_epoch, "loss": float(loss), "accuracy": float(accuracy),
                       "images_per_s": float(images_per_s)})


def wrap_for_ddp(train_module: TrainModule) -> nn.Module:
    """DDP over what is replicated: the whole module, or only the embedder when the head is sharded by class."""
    if isinstance(train_module.head, CombinedMarginHead):
        return TrainModule(prepare_model(train_module.embedder, move_to_device=False), train_module.head)
    return prepare_model(train_module, move_to_device=False)


def fast_forward(scheduler, step: int) -> None:
    """Put a step-based schedule at `step` (after a resume) without replaying the steps."""
    if step > 0:
        scheduler.last_epoch = step - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
            scheduler.step()


def _report(rank: int, metrics: dict, module, optimizer, position: Position, history: list, feed,
            *, with_model: bool, skipped: list | None = None, average: WeightAverage | None = None) -> None:
    """Every worker reports. Rank 0 writes the replicated state (and the embedder at epoch ends: the weight
    average where the run keeps one); with a sharded head every worker adds its block of centres, and Ray Train
    merges the workers' files into one checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        save_state(tmp, module, optimizer, position, history, rank=rank, average=average)
        if rank == 0:
            if with_model:
                save_embedder(module.embedder if average is None else average.module, tmp)
                (Path(tmp) / HISTORY_FILE).write_text(json.dumps(
                    {"history": history, "skipped": skipped or [], "classes": len(feed.classes)}, indent=1))
        if any(Path(tmp).iterdir()):
            checkpoint = Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def stream_dataset(config: TrainConfig):
    """The shards as a Ray Data dataset decoded on CPU tasks (block order shuffled each epoch), and its rows."""
    import ray.data

    from trainer.shards import decode_rows, read_classes

    read_classes(config.data)
    spare = ray.cluster_resources().get("CPU", 0) - config.workers * config.cpus_per_worker
    if spare < 1:
        fewer = "lower --cpus-per-worker, " if config.cpus_per_worker > 1 else ""
        fewer += "give fewer --workers, " if config.workers > 1 else ""
        raise BadInput(f"streaming shards needs a CPU for decoding beside the {config.workers} worker(s) x "
                       f"{config.cpus_per_worker} CPU(s) training; the cluster has {max(spare, 0):g} to spare: "
                       f"{fewer}or add CPUs")
    dataset = ray.data.read_parquet(config.data, columns=["image", "label", "path"])
    rows = dataset.count()  # from the Parquet footers, no data read
    decoded = dataset.randomize_block_order().map_batches(decode_rows, fn_kwargs={"spec": decode_spec(config.spec)},
                                                          batch_size=256, batch_format="numpy")
    return decoded, rows


def enough_to_train(items: list, config: TrainConfig) -> None:
    """BadInput where an image tree or manifest cannot make a run: one identity (a face model learns to tell
    people apart), or too few images for one batch on each worker (unreadable ones, skipped later, are checked
    again by the workers)."""
    identities = len({item.identity for item in items})
    if identities < 2:
        raise BadInput(f"{config.data} holds {identities} identit{'y' if identities == 1 else 'ies'}: training "
                       "learns to tell people apart and needs two or more")
    if len(items) // config.workers // config.batch_size == 0:
        raise BadInput(f"{len(items)} images cannot fill one batch of {config.batch_size} on each of "
                       f"{config.workers} worker(s): lower --batch-size")


def worker_error(exc: WorkerGroupError) -> ArcmatchError | None:
    """The first of the workers' failures that is one of arcmatch's own errors (a BadInput a worker raised on
    reading the data, say), else None: Ray wraps it in a WorkerGroupError, which would be reported as a bug."""
    for failure in exc.worker_failures.values():
        seen: BaseException | None = failure
        while seen is not None:
            if isinstance(seen, ArcmatchError) and not hasattr(seen, "cause"):  # Ray's wrappers carry .cause
                return seen
            seen = getattr(seen, "cause", None) or seen.__cause__
    return None


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    history: list[dict]
    skipped: list[tuple[str, str]]
    seconds: float
    note: str = ""  # how the backbone was built (output stride, shards), what was exported: for the run's report


def fit(config: TrainConfig, output: str | Path, *, storage: str | Path, name: str | None = None,
        on_progress: Callable[[dict], None] | None = None) -> TrainResult:
    """Run the TorchTrainer and copy the final embedder checkpoint to `output`.

    Ray Train resumes a run whose name already exists in `storage` from its latest checkpoint (also on another
    number of workers): pass that name to continue it. Without a name a new, timestamped run starts.
    `on_progress` is called on this thread with rank 0's latest progress (trainer/progress.py) while it runs.
    """
    started = time.perf_counter()
    notes = []
    check_backbone(config.spec.backbone)
    if config.output_stride:
        spec, built = with_output_stride(config.spec, config.output_stride)
        config = replace(config, spec=spec)
        notes.append(built)
    aligned = shard_spec(config.spec, config.data) if is_shard_dir(config.data) else config.spec
    if aligned != config.spec:
        config = replace(config, spec=aligned)
        notes.append("shards hold aligned faces: the model's spec says five_point")
    if config.average_decay:
        notes.append(f"the exported weights are their moving average (decay up to {config.average_decay:g}), not "
                     "the last step's")
    board = ProgressBoard.remote() if on_progress is not None else None
    datasets, rows = {}, 0
    if is_shard_dir(config.data):
        datasets["train"], rows = stream_dataset(config)
    else:
        # a missing tree, a bad manifest or too little in it fails here, in one line, not inside a worker
        enough_to_train(list_images(config.data), config)
    name = name or new_run_name()
    run = Path(storage).resolve() / name
    notes.append(check_or_record(run, config))  # a resume keeps what it learns by
    newest = newest_complete(run)
    resources = {"CPU": config.cpus_per_worker} | ({"GPU": 1} if config.gpu else {})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "stream_rows": rows, "board": board,
                           "newest": str(newest.path) if newest else None},
        datasets=datasets,
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=config.gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage).resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.max_failures),
        ),
    )
    try:
        result = trainer.fit() if on_progress is None else run_with_progress(trainer.fit, board, on_progress)
    except WorkerGroupError as exc:
        found = worker_error(exc)  # a worker's refusal of the input is the caller's, said as such
        if found is None:
            raise
        raise found from None
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name} finished without a checkpoint")
    remove_unkept(run, [Path(c.path) for c, _ in result.best_checkpoints or []])
    with result.checkpoint.as_directory() as directory:
        model = load_embedder(directory)
        record = json.loads((Path(directory) / HISTORY_FILE).read_text())
    save_embedder(model, output)
    if config.precision == "auto" and not config.gpu and (record["history"] or [{}])[-1].get("precision") == "bf16":
        notes.append("trained under bf16 autocast: this CPU computes bf16 natively (--precision fp32 for fp32)")
    return TrainResult(Path(output), record["history"], [tuple(s) for s in record["skipped"]],
                       time.perf_counter() - started, "; ".join(n for n in notes if n))
