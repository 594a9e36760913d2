"""Training images/s of an R50-class face model on one GPU: bf16 autocast and channels_last, on and off.

Needs only torch and timm (no Ray, no Milvus): it drives trainer.step.train_step, the same step the Ray Train
job runs, on random in-memory data, so the figure is the compute ceiling that the data pipeline must feed.

    PYTHONPATH=. python bench/gpu_train_throughput.py --backbone resnet50 --batch-size 256 --out gpu.json
    PYTHONPATH=. python bench/gpu_train_throughput.py --device cpu --backbone resnet10t --input-size 32 \
        --batch-size 4 --steps 2 --warmup 1 --classes 10      # a smoke run of the script itself, no figures
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from embedder.model import FaceEmbedder, with_output_stride
from embedder.spec import ModelSpec
from trainer.config import TrainConfig
from trainer.heads import build_head
from trainer.step import TrainModule, build_optimizer, build_scheduler, train_step


def measure(args: argparse.Namespace, spec: ModelSpec, bf16: bool, channels_last: bool) -> dict:
    torch.manual_seed(0)
    device = torch.device(args.device)
    module = TrainModule(FaceEmbedder(spec), build_head("arcface", args.embedding_size, args.classes)).to(device)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    config = TrainConfig(data="-", spec=spec, optimizer="sgd", lr=0.1)
    optimizer = build_optimizer(module, config)
    scheduler = build_scheduler(optimizer, 10, args.steps + args.warmup)
    x = torch.randn(args.batch_size, 3, args.input_size, args.input_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (args.batch_size,), device=device)
    dtype = torch.bfloat16 if bf16 else None
    for _ in range(args.warmup):
        train_step(module, optimizer, scheduler, x, y, autocast_dtype=dtype, clip_grad_norm=5.0)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        loss, _ = train_step(module, optimizer, scheduler, x, y, autocast_dtype=dtype, clip_grad_norm=5.0)
    sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"bf16": bf16, "channels_last": channels_last, "images_per_s": args.steps * args.batch_size / seconds,
            "peak_memory_gib": peak, "final_loss": loss}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--embedding-size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--output-stride", type=int, default=16, help="as `arcmatch train` builds it")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--device", default="cuda", help="cpu only to check the script runs; its figures mean nothing")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark measures GPU training throughput")
    torch.backends.cudnn.benchmark = True
    spec, note = with_output_stride(ModelSpec(args.backbone, args.embedding_size, (args.input_size,) * 2),
                                    args.output_stride)
    print(note)
    rows = [measure(args, spec, bf16, cl) for bf16, cl in ((False, False), (True, False), (True, True))]
    name = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    result = {"device": name, "torch": torch.__version__, **vars(args), "runs": rows}
    result["out"] = str(args.out) if args.out else None
    for row in rows:
        print(f"bf16={row['bf16']!s:5} channels_last={row['channels_last']!s:5} "
              f"{row['images_per_s']:8.0f} img/s  peak {row['peak_memory_gib']:.1f} GiB  loss {row['final_loss']:.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
