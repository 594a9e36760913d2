"""Cosines between embeddings and class centres without a normalised copy of the centres.

`F.linear(F.normalize(e), F.normalize(w))` keeps a unit-norm copy of every centre alive for the backward: with a
million identities of 512-d that copy is 1.9 GiB per step on top of the centres themselves, the largest single
activation of an unsharded head. Here the cosine is the raw product scaled by each centre's inverse norm
(C floats) and the centres' gradient is built in place: what is kept between forward and backward is the
embeddings, a reference to the centres and their inverse norms.
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
        # Only matmuls and (C, d) or (N, d) work: no elementwise pass over the (N, C) matrix, which with a large
        # global batch costs more than the matmuls themselves.
        embeddings, weight, inverse = ctx.saved_tensors
        unit = F.normalize(embeddings, eps=_EPS)
        grad_embeddings = grad_weight = None
        if ctx.needs_input_grad[0]:  # d cos_ij / d unit_i = w_j / |w_j|, then through the normalisation
            if grad.shape[0] > weight.shape[1]:
                grad_unit = grad @ (weight * inverse[:, None])
            else:
                grad_unit = (grad * inverse) @ weight
            norm = embeddings.norm(dim=1, keepdim=True).clamp_min(_EPS)
            grad_embeddings = (grad_unit - (grad_unit * unit).sum(dim=1, keepdim=True) * unit) / norm
        if ctx.needs_input_grad[1]:
            # d cos_ij / d w_j = (unit_i - cos_ij w_j / |w_j|) / |w_j|. With P_j = sum_i g_ij unit_i / |w_j|,
            # sum_i g_ij cos_ij = w_j . P_j, so the gradient is P_j - (w_j . P_j) w_j / |w_j|^2.
            projected = (grad.t() @ unit).mul_(inverse[:, None])
            along = torch.linalg.vecdot(weight, projected, dim=1) * inverse.square()
            grad_weight = projected.addcmul_(weight, along[:, None], value=-1)
        return grad_embeddings, grad_weight


def cosine_matrix(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(N, C) cosines of N embeddings (N, d) against C centres (C, d); neither needs unit norm."""
    return _Cosine.apply(embeddings, weight)
