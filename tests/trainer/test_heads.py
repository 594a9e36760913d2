import math

import pytest
import torch
import torch.nn.functional as F

from common.errors import BadInput
from trainer.heads import AdaFaceHead, CombinedMarginHead, SoftmaxHead, build_head, margin_logits


def unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


def test_arcface_logits_match_the_formula_on_2d_vectors():
    head = CombinedMarginHead(2, 2, s=10.0, m2=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([unit(0.0), unit(math.pi / 2)]))
    x = torch.tensor([unit(0.3), unit(1.0)])
    labels = torch.tensor([0, 1])
    logits = head.logits(x, labels)
    expected = torch.tensor([
        [10 * math.cos(0.3 + 0.5), 10 * math.cos(math.pi / 2 - 0.3)],
        [10 * math.cos(1.0), 10 * math.cos(math.pi / 2 - 1.0 + 0.5)],
    ])
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("m1, m2, m3", [(1.0, 0.0, 0.35), (1.5, 0.0, 0.0), (1.0, 0.3, 0.2)])
def test_combined_margin_matches_the_formula_in_3d(m1, m2, m3):
    torch.manual_seed(0)
    w = F.normalize(torch.randn(4, 3))
    x = F.normalize(torch.randn(5, 3))
    labels = torch.tensor([0, 1, 2, 3, 0])
    cos = x @ w.T
    logits = margin_logits(cos, labels, 2.0, m1, m2, m3)
    for i, label in enumerate(labels.tolist()):
        theta = math.acos(cos[i, label].item())
        if m1 * theta + m2 <= math.pi:
            assert logits[i, label].item() == pytest.approx(2 * (math.cos(m1 * theta + m2) - m3), abs=1e-4)
        others = [j for j in range(4) if j != label]
        torch.testing.assert_close(logits[i, others], 2 * cos[i, others])


def test_fallback_past_theta_max_is_continuous_and_decreasing():
    m1, m2 = 1.0, 0.5
    theta_max = math.pi - m2
    thetas = torch.tensor([theta_max - 1e-3, theta_max, theta_max + 1e-3, theta_max + 0.3, math.pi - 1e-3])
    cos = torch.cos(thetas)[:, None]
    values = margin_logits(cos, torch.zeros(5, dtype=torch.long), 1.0, m1, m2, 0.0)[:, 0]
    assert (values[1:] < values[:-1]).all()
    assert abs(values[0] - values[2]) < 0.01
    assert values[-1] > -1.6  # stays bounded, no jump towards -inf


def test_gradients_are_finite_at_cos_plus_and_minus_one():
    head = CombinedMarginHead(2, 2, s=64.0, m2=0.5)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    loss, _ = head(x, torch.tensor([0, 0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_no_nan_under_low_precision_autocast(dtype):
    torch.manual_seed(0)
    head = CombinedMarginHead(8, 100, s=64.0, m2=0.5)
    x = torch.randn(32, 8, requires_grad=True)
    labels = torch.randint(0, 100, (32,))
    with torch.autocast("cpu", dtype=dtype):
        loss, _ = head(x.to(dtype), labels)
        logits = head.logits(x.to(dtype), labels)
    assert logits.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_presets_and_bad_margins():
    assert isinstance(build_head("softmax", 4, 3), SoftmaxHead)
    cosface = build_head("cosface", 4, 3)
    assert (cosface.m1, cosface.m2, cosface.m3) == (1.0, 0.0, 0.35)
    assert build_head("arcface", 4, 3, margins={"m2": 0.3}).m2 == 0.3
    with pytest.raises(BadInput, match="unknown head"):
        build_head("arcfase", 4, 3)
    with pytest.raises(BadInput, match="m1 >= 1"):
        CombinedMarginHead(4, 3, m1=0.5)


def test_unsharded_loss_is_cross_entropy_of_the_margin_logits():
    torch.manual_seed(0)
    head = CombinedMarginHead(8, 20, s=30.0, m2=0.4)
    x = torch.randn(16, 8)
    labels = torch.randint(0, 20, (16,))
    loss, predicted = head(x, labels)
    logits = head.logits(x, labels)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels))
    assert torch.equal(predicted, logits.argmax(dim=1))


def test_partial_fc_keeps_every_class_of_the_batch():
    from trainer.sharded import sample_centres

    torch.manual_seed(0)
    labels = torch.tensor([3, 3, 97, -1, 50])
    keep = sample_centres(labels, 100, 0.1)
    assert len(keep) == 10 and {3, 50, 97} <= set(keep.tolist())
    assert torch.equal(keep, keep.sort().values)
    assert set(sample_centres(labels, 100, 0.01).tolist()) == {3, 50, 97}  # never fewer than the positives


def test_partial_fc_loss_is_the_softmax_over_the_sampled_centres():
    torch.manual_seed(0)
    head = CombinedMarginHead(8, 50, s=30.0, m2=0.5, sample_rate=0.2)
    x = torch.randn(6, 8)
    labels = torch.tensor([0, 7, 7, 21, 33, 49])
    torch.manual_seed(1)
    loss, _ = head(x, labels)
    torch.manual_seed(1)
    from trainer.sharded import sample_centres

    keep = sample_centres(labels, 50, 0.2)
    remapped = torch.searchsorted(keep, labels)
    expected = F.cross_entropy(head.logits(x, remapped, head.weight[keep]), remapped)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[keep] = False
    assert head.weight.grad[untouched].abs().sum() == 0 and head.weight.grad[keep].abs().sum() > 0


def test_adaface_margin_follows_the_norm_of_each_row():
    head = AdaFaceHead(2, 2, s=10.0, m=0.4, h=0.5).eval()  # eval: the running statistics stay as set
    with torch.no_grad():
        head.weight.copy_(torch.tensor([unit(0.0), unit(math.pi / 2)]))
        head.norm_mean.fill_(2.0)
        head.norm_std.fill_(1.0)
    norms = [2.0, 3.0, 10.0, 0.001]  # q = 0 (CosFace), about 0.5, clipped to 1, about -1 (ArcFace)
    x = torch.tensor([unit(0.9)] * 4) * torch.tensor(norms)[:, None]
    logits = head.logits(x, torch.tensor([0, 0, 0, 0]))
    q = [max(-1.0, min(1.0, 0.5 * (n - 2.0) / (1.0 + 1e-3))) for n in norms]
    expected = [10 * (math.cos(0.9 - 0.4 * v) - 0.4 * (1 + v)) for v in q]
    torch.testing.assert_close(logits[:, 0], torch.tensor(expected), atol=1e-4, rtol=1e-4)
    assert q[0] == 0 and logits[0, 0].item() == pytest.approx(10 * (math.cos(0.9) - 0.4), abs=1e-4)
    assert logits[3, 0].item() == pytest.approx(10 * math.cos(0.9 + 0.4), abs=2e-3)
    torch.testing.assert_close(logits[:, 1], torch.full((4,), 10 * math.cos(math.pi / 2 - 0.9)), atol=1e-4, rtol=1e-4)


def test_adaface_learns_its_norm_statistics_only_while_training():
    torch.manual_seed(0)
    head = AdaFaceHead(8, 10, momentum=0.5)
    x = torch.randn(32, 8) * 5
    labels = torch.randint(0, 10, (32,))
    norms = x.norm(dim=1)
    head(x, labels)
    assert head.norm_mean.item() == pytest.approx(0.5 * 20 + 0.5 * norms.mean().item(), rel=1e-5)
    assert head.norm_std.item() == pytest.approx(0.5 * 100 + 0.5 * norms.std().item(), rel=1e-5)
    head.eval()
    before = head.norm_mean.clone()
    head(x, labels)
    assert torch.equal(head.norm_mean, before)
    assert {"norm_mean", "norm_std"} <= {k.split(".")[-1] for k in head.state_dict()}  # resumed with the module


def test_adaface_gradients_are_finite_and_margins_take_no_gradient():
    torch.manual_seed(0)
    head = AdaFaceHead(8, 20, s=64.0)
    x = (torch.randn(16, 8) * torch.linspace(0.01, 50, 16)[:, None]).requires_grad_()
    loss, _ = head(x, torch.randint(0, 20, (16,)))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


def test_adaface_preset_and_bad_margins():
    head = build_head("adaface", 4, 3, s=32.0, margins={"m": 0.3, "h": 0.25}, sample_rate=0.5)
    assert isinstance(head, AdaFaceHead) and (head.m, head.h, head.s, head.sample_rate) == (0.3, 0.25, 32.0, 0.5)
    with pytest.raises(BadInput, match="adaface takes margins m and h"):
        build_head("adaface", 4, 3, margins={"m2": 0.5})
    with pytest.raises(BadInput, match="0 < h <= 1"):
        build_head("adaface", 4, 3, margins={"h": 0.0})
