"""Memory of the margin head per worker against the number of identities, sharded and with Partial FC.

What one worker holds for the head in one training step, measured on real tensors (CPU, fp32), not estimated:
- state: its block of centres, their gradient and the optimizer's state (SGD momentum: 1 buffer; AdamW: 2);
- activations: every tensor autograd saves for the backward of one step (cosines, logits, softmax), counted
  with torch.autograd.graph.saved_tensors_hooks; the centres, when saved by reference, are not counted again.

A worker of a W-worker run holds C/W centres and sees the global batch (B per worker x W), which is what this
script builds (world_size=1 with C/W classes and a batch of B x W rows: the same tensors, no process group needed).

    .venv/bin/python bench/head_memory.py [--dim 512] [--batch 128] [--optimizer sgd] [--out result.json]
    .venv/bin/python bench/head_memory.py --cosine normalise_then_multiply --repeats 5   # the baseline, timed
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from harness import emit  # bench/harness.py, beside this script

import trainer.heads
from trainer.cosine import cosine_matrix
from trainer.heads import CombinedMarginHead

COSINES = {  # the head's cosine against the textbook one, which keeps a normalised copy of the centres
    "arcmatch": cosine_matrix,
    "normalise_then_multiply": lambda embeddings, weight: F.linear(F.normalize(embeddings), F.normalize(weight)),
}

GIB = 1024**3


def measure(classes_per_worker: int, rows: int, dim: int, sample_rate: float, optimizer: str,
            repeats: int = 0) -> dict:
    torch.manual_seed(0)
    head = CombinedMarginHead(dim, classes_per_worker, s=64.0, m2=0.5, sample_rate=sample_rate)
    opt = (torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9) if optimizer == "sgd"
           else torch.optim.AdamW(head.parameters(), lr=1e-3))
    embeddings = torch.randn(rows, dim, requires_grad=True)
    labels = torch.randint(0, classes_per_worker, (rows,))
    saved: dict[int, int] = {}
    held = {head.weight.untyped_storage().data_ptr()}  # the centres themselves are state, counted there

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in held:
            saved[storage.data_ptr()] = storage.nbytes()  # a storage saved twice counts once
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = head(embeddings, labels)
    loss.backward()
    opt.step()
    state = sum(t.numel() * t.element_size() for t in (head.weight, head.weight.grad))
    state += sum(v.numel() * v.element_size() for v in opt.state[head.weight].values() if v.ndim > 0)
    seconds = []
    for _ in range(repeats):  # forward + backward + step, the head alone
        started = time.perf_counter()
        loss, _ = head(embeddings, labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
        seconds.append(time.perf_counter() - started)
    return {"state_gib": round(state / GIB, 3), "activations_gib": round(sum(saved.values()) / GIB, 3),
            "step_ms": round(1000 * float(np.median(seconds)), 1) if seconds else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128, help="per worker")
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    parser.add_argument("--cosine", default="arcmatch", choices=sorted(COSINES),
                        help="the head's cosine, or the normalise-then-multiply baseline")
    parser.add_argument("--repeats", type=int, default=0, help="also time this many head steps (median)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    trainer.heads.cosine_matrix = COSINES[args.cosine]
    rows = []
    for identities, workers, rate in [(100_000, 1, 1.0), (100_000, 8, 1.0), (1_000_000, 1, 1.0), (1_000_000, 8, 1.0),
                                      (1_000_000, 8, 0.1), (1_000_000, 32, 1.0), (1_000_000, 32, 0.1)]:
        per_worker = identities // workers
        figures = measure(per_worker, args.batch * workers, args.dim, rate, args.optimizer, args.repeats)
        rows.append({"identities": identities, "workers": workers, "sample_rate": rate,
                     "centres_per_worker": per_worker, "global_batch": args.batch * workers, **figures,
                     "total_gib": round(figures["state_gib"] + figures["activations_gib"], 3)})
        print(rows[-1], flush=True)
    emit({"dim": args.dim, "batch_per_worker": args.batch, "optimizer": args.optimizer, "cosine": args.cosine,
          "rows": rows}, args.out)


if __name__ == "__main__":
    main()
