"""NT-Xent of DeepDXF: reference values, edge cases, mixed precision."""
import math

import torch
import torch.nn.functional as F

from model.DeepDXF_loss import nt_xent_chance, nt_xent_loss


def slow_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """Loop reference: anchor i, positive its other view, all other 2N-2 rows negatives."""
    z = F.normalize(torch.cat([z1, z2]).double(), dim=-1)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        num = math.exp(float(z[i] @ z[pos]) / tau)
        den = sum(math.exp(float(z[i] @ z[j]) / tau) for j in range(n2) if j != i)
        total += -math.log(num / den)
    return total / n2


def test_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    for tau in (0.15, 0.5, 1.0):
        assert abs(nt_xent_loss(z1, z2, tau).item() - slow_nt_xent(z1, z2, tau)) < 1e-5


def test_identical_views_of_orthogonal_drawings_known_value():
    n, tau = 4, 0.15
    z = torch.eye(8)[:n] * 3.0  # unnormalized on purpose
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / tau))
    assert abs(nt_xent_loss(z, z.clone(), tau).item() - expected) < 1e-6


def test_orthogonal_views_give_chance_level():
    n = 6
    z = torch.eye(2 * n)
    loss = nt_xent_loss(z[:n], z[n:], 0.15).item()
    assert abs(loss - nt_xent_chance(n)) < 1e-6
    assert abs(nt_xent_chance(n) - math.log(2 * n - 1)) < 1e-12


def test_batch_of_one_is_zero_and_finite():
    z1 = torch.randn(1, 8, requires_grad=True)
    loss = nt_xent_loss(z1, torch.randn(1, 8), 0.15)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(z1.grad).all()
    assert nt_xent_chance(1) == 0.0


def test_uneven_last_batch_uses_its_own_size():
    g = torch.Generator().manual_seed(1)
    for n in (2, 3, 7):
        z1, z2 = torch.randn(n, 8, generator=g), torch.randn(n, 8, generator=g)
        assert abs(nt_xent_loss(z1, z2, 0.2).item() - slow_nt_xent(z1, z2, 0.2)) < 1e-5


def test_no_nan_under_bf16_autocast_and_half_inputs():
    g = torch.Generator().manual_seed(2)
    lin = torch.nn.Linear(16, 16)
    x1, x2 = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = lin(x1), lin(x2)
        assert z1.dtype == torch.bfloat16
        loss = nt_xent_loss(z1, z2, 0.05)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in lin.parameters())
    # identical half-precision views at a small temperature: large logits, still finite
    zh = torch.randn(4, 8, generator=g).half()
    assert torch.isfinite(nt_xent_loss(zh, zh.clone(), 0.01))
