"""What Ray Train costs: images/s of `arcmatch train` (TorchTrainer, one worker) vs a plain PyTorch loop.

Both train the same model (timm backbone + neck + ArcFace head) with the same optimizer, batch and in-memory
data (trainer.feed.MemoryFeed over one synthetic image tree), on the same CPU threads, in the same run. The
figure for each is images/s over the epochs after the first (warm-up), timed inside the epoch loop, so Ray's
start-up and the per-epoch checkpoint are not counted; the two are run alternately, `--repeats` times each, and
the medians compared.

    .venv/bin/python bench/train_overhead.py [--repeats 3] [--epochs 3] [--out result.json]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness import emit  # bench/harness.py, beside this script

from embedder.spec import ModelSpec
from jobs.runtime import init_ray
from trainer.config import TrainConfig
from trainer.feed import MemoryFeed
from trainer.ray_loop import fit
from trainer.step import build_module, build_optimizer, build_scheduler, make_batch, train_step
from trainer.synthetic import write_dataset


def plain_loop(config: TrainConfig) -> list[float]:
    """The same steps as the Ray worker runs, in this process, without Ray: images/s per epoch."""
    torch.set_num_threads(config.cpus_per_worker)
    torch.manual_seed(config.seed)
    feed = MemoryFeed(config, 0, 1)
    module = build_module(config, len(feed.classes))
    optimizer = build_optimizer(module, config)
    scheduler = build_scheduler(optimizer, feed.steps_per_epoch, feed.steps_per_epoch * config.epochs)
    rates = []
    for epoch in range(config.epochs):
        rng = np.random.default_rng([config.seed, 0, epoch, 0])
        started, steps = time.perf_counter(), 0
        for images, labels in feed.epoch(epoch, 0):
            x, y = make_batch(images, labels, config.spec, rng)
            train_step(module, optimizer, scheduler, x, y, clip_grad_norm=config.clip_grad_norm)
            steps += 1
        rates.append(steps * config.batch_size / (time.perf_counter() - started))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--images", type=int, default=20, help="per identity")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    init_ray(None)
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp) / "data", range(args.identities), args.images, size=args.input_size)
        spec = ModelSpec(args.backbone, embedding_size=128, input_size=(args.input_size,) * 2)
        config = TrainConfig(data=str(Path(tmp) / "data"), spec=spec, head="arcface", scale=32.0, epochs=args.epochs,
                             batch_size=args.batch_size, optimizer="sgd", lr=0.05, cpus_per_worker=args.cpus,
                             log_every=0)
        plain, ray_train = [], []
        for repeat in range(args.repeats):
            plain.append(float(np.median(plain_loop(config)[1:])))
            result = fit(config, Path(tmp) / f"model{repeat}", storage=Path(tmp) / "runs", name=f"overhead{repeat}")
            ray_train.append(float(np.median([h["images_per_s"] for h in result.history[1:]])))
            print(f"repeat {repeat}: plain {plain[-1]:.1f} img/s, Ray Train {ray_train[-1]:.1f} img/s", flush=True)
    emit({"backbone": args.backbone, "input_size": args.input_size, "batch_size": args.batch_size,
          "images": args.identities * args.images, "epochs": args.epochs, "cpus": args.cpus,
          "plain_images_per_s": plain, "ray_train_images_per_s": ray_train,
          "ratio_of_medians": round(float(np.median(ray_train) / np.median(plain)), 3)}, args.out)


if __name__ == "__main__":
    main()
