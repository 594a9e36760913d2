"""Cosines between embeddings and class centres without a normalised copy of the centres.

`F.linear(F.normalize(e), F.normalize(w))` keeps a unit-norm copy of every centre alive for the backward: with a
million identities of 512-d that copy is 1.9 GiB per step on top of the centres themselves, the largest single
activation of an unsharded head. Here the cosine is the raw product scaled by each centre's inverse norm
(C floats), the backward recomputes the cosines it needs, and the centres' gradient is built in place: what is
kept between forward and backward is the embeddings, a reference to the centres and their inverse norms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-12  # as F.normalize's


class _Cosine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(embeddings, eps=_EPS)
        inverse = 1.0 / weight.norm(dim=1).clamp_min(_EPS)
        ctx.save_for_backward(embeddings, weight, inverse)
        return (unit @ weight.t()).mul_(inverse)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        embeddings, weight, inverse = ctx.saved_tensors
        unit = F.normalize(embeddings, eps=_EPS)
        scaled = grad * inverse  # d loss / d (unit . w_j), column j scaled by 1/|w_j|
        grad_embeddings = grad_weight = None
        if ctx.needs_input_grad[0]:  # through the embeddings' normalisation
            grad_unit = scaled @ weight
            norm = embeddings.norm(dim=1, keepdim=True).clamp_min(_EPS)
            grad_embeddings = (grad_unit - (grad_unit * unit).sum(dim=1, keepdim=True) * unit) / norm
        if ctx.needs_input_grad[1]:
            # d cos_ij / d w_j = (unit_i - cos_ij w_j / |w_j|) / |w_j|; the cosines are recomputed, not kept
            along = (grad * (unit @ weight.t()).mul_(inverse)).sum(dim=0) * inverse.square()
            grad_weight = (scaled.t() @ unit).addcmul_(weight, along[:, None], value=-1)
        return grad_embeddings, grad_weight


def cosine_matrix(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(N, C) cosines of N embeddings (N, d) against C centres (C, d); neither needs unit norm."""
    return _Cosine.apply(embeddings, weight)
