"""Each loss weighting against its formula on toy problems (model/weighting/)."""
import math

import pytest
import torch

from model.weighting import (
    DWAWeighting, FixedWeighting, GradNormWeighting, UncertaintyWeighting, build_weighting, normalized_weights,
)


def test_fixed_is_weighted_sum():
    w = FixedWeighting(2, ["a", "b"], [0.3, 2.0])
    losses = torch.tensor([1.5, 4.0], requires_grad=True)
    total = w(losses)
    assert total.item() == pytest.approx(0.3 * 1.5 + 2.0 * 4.0)
    total.backward()
    assert torch.allclose(losses.grad, torch.tensor([0.3, 2.0]))
    assert w.weight_parameters() == []
    assert w.log_values() == {"w_a": pytest.approx(0.3), "w_b": pytest.approx(2.0)}


def test_uncertainty_value_gradient_and_optimum():
    w = UncertaintyWeighting(2, ["a", "b"])
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.5, -1.0]))
    losses = torch.tensor([2.0, 0.25])
    total = w(losses)
    s = torch.tensor([0.5, -1.0])
    assert total.item() == pytest.approx(float((torch.exp(-s) * losses + s).sum()), rel=1e-6)
    total.backward()
    assert torch.allclose(w.log_vars.grad, 1 - torch.exp(-s) * losses, atol=1e-6)
    # minimizing over s alone: exp(s_i) -> L_i, i.e. w_i -> 1 / L_i
    w2 = UncertaintyWeighting(2)
    opt = torch.optim.SGD(w2.weight_parameters(), lr=0.2)
    for _ in range(400):
        opt.zero_grad()
        w2(torch.tensor([4.0, 0.5])).backward()
        opt.step()
    assert torch.allclose(w2.weights(), torch.tensor([0.25, 2.0]), rtol=1e-3)


def test_dwa_formula():
    w = DWAWeighting(2, ["a", "b"], temperature=2.0)
    assert torch.equal(w.weights(), torch.ones(2))
    w.end_epoch(torch.tensor([1.0, 2.0]))
    assert torch.equal(w.weights(), torch.ones(2))  # one epoch seen: still 1
    w.end_epoch(torch.tensor([0.5, 1.8]))
    r = torch.tensor([0.5 / 1.0, 1.8 / 2.0])
    expect = 2 * torch.exp(r / 2) / torch.exp(r / 2).sum()
    assert torch.allclose(w.weights(), expect, atol=1e-6)
    assert w.weights()[1] > w.weights()[0]  # the task that improved less gets more weight
    w.end_epoch(torch.tensor([float("nan"), 1.0]))  # a NaN epoch changes nothing
    assert torch.allclose(w.weights(), expect, atol=1e-6)
    w.end_epoch(torch.tensor([0.5, 0.9]))
    r = torch.tensor([0.5 / 0.5, 0.9 / 1.8])
    assert torch.allclose(w.weights(), 2 * torch.softmax(r / 2, 0), atol=1e-6)


def _two_models():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 1), torch.nn.Linear(4, 1)
    xa, xb = torch.randn(8, 3), torch.randn(8, 4)
    return a, b, xa, xb


def test_gradnorm_measures_each_model_own_gradient_and_follows_formula():
    a, b, xa, xb = _two_models()
    w = GradNormWeighting(2, ["a", "b"], alpha=1.5)
    opt = torch.optim.SGD(w.weight_parameters(), lr=0.01)
    la0, lb0 = None, None
    for step in range(2):
        la = (a(xa) ** 2).mean() * (1.0 if step == 0 else 0.5)
        lb = (b(xb) ** 2).mean()
        losses = torch.stack([la, lb])
        w.observe(losses, [list(a.parameters()), list(b.parameters())])
        ga = torch.sqrt(sum((g ** 2).sum() for g in torch.autograd.grad(la, list(a.parameters()), retain_graph=True)))
        gb = torch.sqrt(sum((g ** 2).sum() for g in torch.autograd.grad(lb, list(b.parameters()), retain_graph=True)))
        assert torch.allclose(w.last_grad_norms, torch.stack([ga, gb]), rtol=1e-5)
        if step == 0:
            la0, lb0 = la.item(), lb.item()
        # hand-computed GradNorm gradient of the weights (renormalized after the last step)
        wv = w.weights()
        G = wv * torch.stack([ga, gb])
        ratio = torch.tensor([la.item() / la0, lb.item() / lb0])
        r = ratio / ratio.mean()
        target = G.mean() * r ** 1.5
        expect = torch.sign(G - target) * torch.stack([ga, gb])
        total = w(losses)
        total.backward()
        assert w.w.grad is None  # the combined loss does not train the weights
        w.step()  # the training step's hook: w renormalized, its gradient written
        assert torch.allclose(w.weight_gradient(), expect, rtol=1e-5)
        assert torch.allclose(w.w.grad, expect, rtol=1e-5)
        opt.step()
        opt.zero_grad()
        assert w.weights().sum().item() == pytest.approx(2.0, rel=1e-6)
    # at step 1 task a learned faster (ratio 0.5): its target is lower, so its weight must fall
    assert w.weights()[0] < w.weights()[1]


def test_state_round_trip_for_every_method():
    for method in ("fixed", "uncertainty", "gradnorm", "dwa"):
        w = build_weighting(method, ["GF", "DeepDXF"], fixed_weights=[0.5, 1.5])
        with torch.no_grad():
            for p in w.parameters():
                p.add_(torch.tensor([0.3, -0.2]))
        w.end_epoch(torch.tensor([1.0, 2.0]))
        w.end_epoch(torch.tensor([0.7, 1.9]))
        w2 = build_weighting(method, ["GF", "DeepDXF"])
        w2.load_state_dict(w.state_dict())
        assert torch.allclose(w.weights(), w2.weights()), method
        assert math.isclose(float(normalized_weights(w2).sum()), 2.0, rel_tol=1e-6)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown weighting"):
        build_weighting("softmax", ["a", "b"])


def test_gradnorm_under_fp16_measures_the_gradient_that_underflows_unscaled():
    """A tiny loss through an fp16 graph: its unscaled gradient underflows to 0 in fp16;
    observe(..., grad_scale=S) takes the gradient of S*L and divides by S in fp32."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)]
    x = torch.randn(4, 8)

    def losses():
        with torch.autocast("cpu", dtype=torch.float16):
            return torch.stack([(layer(x).float() * 1e-9).sum() for layer in layers])

    exact = []
    for layer in layers:  # fp32 reference
        g = torch.autograd.grad((layer(x) * 1e-9).sum(), list(layer.parameters()))
        exact.append(float(torch.sqrt(sum((t ** 2).sum() for t in g))))
    params = [list(layer.parameters()) for layer in layers]
    unscaled = GradNormWeighting(2)
    unscaled.observe(losses(), params)
    assert float(unscaled.last_grad_norms.max()) < 0.5 * min(exact)  # what went wrong before: ~0
    scaled = GradNormWeighting(2)
    scaled.observe(losses(), params, grad_scale=65536.0)
    assert scaled.last_grad_norms.tolist() == pytest.approx(exact, rel=2e-2)
