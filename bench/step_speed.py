"""Images/s of one training step (backbone + neck + ArcFace head, forward, backward, AdamW) for variants of the
demo's model spec, side by side: every variant is built first, then the rounds alternate between them, so a
machine that slows down mid-run slows all of them alike (which backbone halves the demo's training).

    .venv/bin/python bench/step_speed.py '{}' '{"backbone_args": {"channels": [48, 96, 192, 384], "stem_width": 16}}'

Each argument is one variant: JSON fields of trainer/configs/demo.json's spec that it changes ('{}': as shipped),
or TrainConfig fields beside them ('{"channels_last": false}': the NCHW layout; '{"precision": "bf16"}': bf16
autocast, fast only on CPUs with bf16 units). Per variant: parameters and images/s of each round (random images,
batch and threads of the demo's config), and images/s of the embedder's forward in eval mode on batches of 256
(what ingestion and search run; the mirror image of flip-TTA is a second such forward).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import emit  # noqa: E402
from embedder.spec import ModelSpec  # noqa: E402
from trainer.config import TrainConfig, read_config_file  # noqa: E402
from trainer.step import (  # noqa: E402
    autocast_dtype,
    build_module,
    build_optimizer,
    build_scheduler,
    make_batch,
    train_step,
)

CLASSES = 400  # the demo's training identities


def build(variant: dict, base: dict):
    config_fields = {f.name for f in fields(TrainConfig)}
    spec = ModelSpec.from_dict({**base["spec"], **{k: v for k, v in variant.items() if k not in config_fields}})
    overrides = {k: v for k, v in variant.items() if k in config_fields}
    config = TrainConfig.from_dict({**base, **overrides, "spec": spec.to_dict(), "data": "unused"})
    module = build_module(config, CLASSES)
    optimizer = build_optimizer(module, config)
    return config, module, optimizer, build_scheduler(optimizer, 10, 10_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", type=json.loads)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per round, after one untimed step")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    base = read_config_file("demo")
    torch.set_num_threads(base.get("cpus_per_worker", 1))
    built = [build(variant, base) for variant in args.variants]
    rng = np.random.default_rng(0)
    rates: list[list[float]] = [[] for _ in built]
    forward: list[list[float]] = [[] for _ in built]
    for _ in range(args.rounds):
        for i, (config, module, optimizer, scheduler) in enumerate(built):
            n = config.batch_size
            images = rng.integers(0, 256, (n, *config.spec.input_size, 3), dtype=np.uint8)
            x, y = make_batch(images, rng.integers(0, CLASSES, n), config.spec, rng,
                              channels_last=config.channels_last)
            autocast = autocast_dtype(config.precision, "cpu")
            train_step(module, optimizer, scheduler, x, y, autocast_dtype=autocast)
            started = time.perf_counter()
            for _ in range(args.steps):
                train_step(module, optimizer, scheduler, x, y, autocast_dtype=autocast)
            rates[i].append(round(n * args.steps / (time.perf_counter() - started), 1))
            forward[i].append(forward_rate(module.embedder, config, rng))
    emit({"threads": torch.get_num_threads(), "variants": [
        {"spec": variant, "parameters": sum(p.numel() for p in module.embedder.parameters()), "images_per_s": r,
         "forward_images_per_s": f}
        for variant, (_, module, _, _), r, f in zip(args.variants, built, rates, forward, strict=True)]}, args.out)


def forward_rate(embedder, config: TrainConfig, rng: np.random.Generator, batch: int = 256, repeats: int = 3) -> float:
    images = rng.integers(0, 256, (batch, *config.spec.input_size, 3), dtype=np.uint8)
    x, _ = make_batch(images, np.zeros(batch, dtype=np.int64), config.spec, rng, channels_last=config.channels_last)
    embedder.eval()
    with torch.inference_mode():
        embedder.embed(x)
        started = time.perf_counter()
        for _ in range(repeats):
            embedder.embed(x)
    embedder.train()
    return round(batch * repeats / (time.perf_counter() - started), 1)


if __name__ == "__main__":
    main()
