"""The Ray Train job: TorchTrainer around trainer.step, one to many workers, CPU or GPU.

Each worker decodes the image tree once, then every epoch takes its own slice of one shared permutation (the
same seed on every rank), cut to the same number of full batches on every worker so DDP never waits on a rank
with fewer steps. Rank 0 writes the embedder checkpoint and the per-epoch history.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, prepare_model

from embedder.checkpoint import load_embedder, save_embedder
from embedder.model import FaceEmbedder
from trainer.config import TrainConfig
from trainer.data import decode_items, list_images
from trainer.heads import build_head
from trainer.state import Position, load_state, save_state
from trainer.step import TrainModule, build_optimizer, build_scheduler, make_batch, train_step

HISTORY_FILE = "history.json"


def _epoch_indices(n: int, epoch: int, seed: int, rank: int, world: int, batch: int) -> np.ndarray:
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per_worker = (n // world) // batch * batch
    return perm[rank * per_worker : (rank + 1) * per_worker]


def train_loop_per_worker(config_dict: dict) -> None:
    config = TrainConfig.from_dict(config_dict)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if not config.gpu:
        torch.set_num_threads(config.cpus_per_worker)
    torch.manual_seed(config.seed)
    device = ray.train.torch.get_device()

    data = decode_items(list_images(config.data), config.spec)
    steps_per_epoch = len(_epoch_indices(len(data.labels), 0, config.seed, rank, world, config.batch_size))
    steps_per_epoch //= config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(data.labels)} images cannot fill one batch of {config.batch_size} on each of {world} workers"
        )
    embedder = FaceEmbedder(config.spec, dropout=config.dropout, backbone_weights=config.backbone_weights)
    head = build_head(config.head, config.spec.embedding_size, len(data.classes), s=config.scale,
                      margins=config.margins or None)
    train_module = TrainModule(embedder, head)
    optimizer = build_optimizer(train_module, config)
    scheduler = build_scheduler(optimizer, int(config.warmup_epochs * steps_per_epoch),
                                steps_per_epoch * config.epochs)
    position, history = Position(0, 0), []
    restored = ray.train.get_checkpoint()
    if restored is not None:  # a resumed run, or a restart after a worker died
        with restored.as_directory() as directory:
            position, history = load_state(directory, train_module, optimizer)
    per_step = config.batch_size * world
    start_step = position.samples // per_step
    fast_forward(scheduler, position.epoch * steps_per_epoch + start_step)
    module = prepare_model(train_module)
    autocast = torch.bfloat16 if device.type == "cuda" else None

    for epoch in range(position.epoch, config.epochs):
        order = _epoch_indices(len(data.labels), epoch, config.seed, rank, world, config.batch_size)
        first = start_step if epoch == position.epoch else 0
        rng = np.random.default_rng([config.seed, rank, epoch, first])
        losses, accuracies, started = [], [], time.perf_counter()
        for step in range(first, steps_per_epoch):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            x, y = make_batch(data.images[idx], data.labels[idx], config.spec, rng)
            loss, acc = train_step(module, optimizer, scheduler, x.to(device), y.to(device),
                                   autocast_dtype=autocast, clip_grad_norm=config.clip_grad_norm)
            losses.append(loss)
            accuracies.append(acc)
            done = step + 1 - first
            if rank == 0 and config.log_every and done % config.log_every == 0:
                rate = done * per_step / (time.perf_counter() - started)
                recent = slice(-config.log_every, None)
                # not print(): Ray Train patches print into its logger, and the driver would show each line twice
                sys.stdout.write(f"epoch {epoch + 1}/{config.epochs} step {step + 1}/{steps_per_epoch} "
                                 f"loss {np.mean(losses[recent]):.3f} acc {np.mean(accuracies[recent]):.3f} "
                                 f"{rate:.0f} img/s\n")
                sys.stdout.flush()
            if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and step + 1 < steps_per_epoch:
                metrics = {"epoch": epoch + 1, "step": step + 1, "loss": float(np.mean(losses[-done:]))}
                _report(rank, metrics, train_module, optimizer, Position(epoch, (step + 1) * per_step), history,
                        data, with_model=False)
        seconds = time.perf_counter() - started
        history.append({
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "accuracy": float(np.mean(accuracies)) if accuracies else float("nan"),
            "images_per_s": len(losses) * per_step / seconds,
            "lr": scheduler.get_last_lr()[0],
            "skipped_images": len(data.skipped),
            "resumed_at_step": first or None,
        })
        _report(rank, history[-1], train_module, optimizer, Position(epoch + 1, 0), history, data, with_model=True)


def fast_forward(scheduler, step: int) -> None:
    """Put a step-based schedule at `step` (after a resume) without replaying the steps."""
    if step > 0:
        scheduler.last_epoch = step - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": intended here
            scheduler.step()


def _report(rank: int, metrics: dict, module, optimizer, position: Position, history: list, data,
            *, with_model: bool) -> None:
    """Every worker reports; rank 0 attaches the checkpoint (full state, and the embedder at epoch ends)."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            save_state(tmp, module, optimizer, position, history)
            if with_model:
                save_embedder(module.embedder, tmp)
                (Path(tmp) / HISTORY_FILE).write_text(json.dumps(
                    {"history": history, "skipped": data.skipped, "classes": len(data.classes)}, indent=1))
            checkpoint = Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    history: list[dict]
    skipped: list[tuple[str, str]]
    seconds: float


def fit(config: TrainConfig, output: str | Path, *, storage: str | Path, name: str | None = None) -> TrainResult:
    """Run the TorchTrainer and copy the final embedder checkpoint to `output`.

    Ray Train resumes a run whose name already exists in `storage` from its latest checkpoint (also on another
    number of workers): pass that name to continue it. Without a name a new, timestamped run starts.
    """
    started = time.perf_counter()
    list_images(config.data)  # a missing tree or bad manifest fails here, in one line, not inside a worker
    name = name or f"arcmatch-train-{time.strftime('%Y%m%d-%H%M%S')}"
    resources = {"CPU": config.cpus_per_worker} | ({"GPU": 1} if config.gpu else {})
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config.to_dict(),
        scaling_config=ScalingConfig(num_workers=config.workers, use_gpu=config.gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage).resolve()),
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.max_failures),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {name} finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        model = load_embedder(directory)
        record = json.loads((Path(directory) / HISTORY_FILE).read_text())
    save_embedder(model, output)
    return TrainResult(Path(output), record["history"], [tuple(s) for s in record["skipped"]],
                       time.perf_counter() - started)
