"""The centres' cosine without a normalised copy: same values and gradients as normalise-then-multiply."""

import torch
import torch.nn.functional as F

from trainer.cosine import cosine_matrix


def test_values_and_gradients_match_normalise_then_multiply():
    generator = torch.Generator().manual_seed(0)
    embeddings = (3 * torch.randn(5, 4, generator=generator, dtype=torch.float64)).requires_grad_()
    weight = (0.1 * torch.randn(7, 4, generator=generator, dtype=torch.float64)).requires_grad_()
    upstream = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    expected = F.linear(F.normalize(embeddings), F.normalize(weight))
    reference = torch.autograd.grad(expected, (embeddings, weight), upstream)
    got = cosine_matrix(embeddings, weight)
    torch.testing.assert_close(got, expected)
    for mine, theirs in zip(torch.autograd.grad(got, (embeddings, weight), upstream), reference, strict=True):
        torch.testing.assert_close(mine, theirs)
    assert torch.autograd.gradcheck(cosine_matrix, (embeddings, weight))


def test_keeps_no_copy_of_the_centres_for_the_backward():
    weight = torch.randn(1000, 64, requires_grad=True)
    embeddings = torch.randn(8, 64, requires_grad=True)
    kept: list[torch.Tensor] = []

    def pack(tensor):
        kept.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        cosine_matrix(embeddings, weight).sum().backward()
    big = [t for t in kept if t.numel() >= weight.numel()]
    assert all(t.untyped_storage().data_ptr() == weight.untyped_storage().data_ptr() for t in big)
    assert weight.grad is not None and torch.isfinite(weight.grad).all()
