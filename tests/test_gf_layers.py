"""DenseGGNN, the GF model (DenseGraphMatching) and its views: equivalence with PyG, masking, loss vs. a slow loop."""
import math

import pytest
import torch
import torch.nn.functional as F

from config.GF_config import GFConfig
from dataset.loaders.views import GFViewRates, gf_pair_views, gf_view
from model.GF_loss import chance_level, node_contrastive_loss
from model.GF_model import DenseGraphMatching, GraphBatch, node_mask
from model.layers.DenseGGNN import DenseGGNN
from model.layers.graph_matching import masked_attention


def augment_view(x, adj, mask, feature_mask_rate, edge_drop_rate, edge_add_rate, generator=None):
    """One GF view with the three rates (``dataset.loaders.views.gf_view``)."""
    return gf_view(x, adj, mask, GFViewRates(feature_mask_rate, edge_drop_rate, edge_add_rate), generator)


def pair_loss(model, x1, adj1, mask1, x2, adj2, mask2, generator=None):
    """The GF loss of B pairs with their views drawn at the default rates (what a GF loader does)."""
    views = gf_pair_views(GraphBatch(x1, adj1, mask1), GraphBatch(x2, adj2, mask2), GFViewRates.of(GFConfig()),
                          generator)
    return model.loss(views)


def random_graphs(B: int, N: int, Fdim: int, seed: int = 0, p_edge: float = 0.4):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, N, Fdim, generator=g)
    a = (torch.rand(B, N, N, generator=g) < p_edge).float()
    a = torch.triu(a, 1)
    a = a + a.transpose(1, 2)
    return x, a


def test_dense_ggnn_matches_pyg_gated_graph_conv():
    pyg = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(0)
    B, N, Fin, D, L = 4, 10, 11, 16, 3
    x, a = random_graphs(B, N, Fin, seed=1)
    # a directed, weighted graph checks the j -> i convention too
    a[0, 2, 5] = 0.7
    a[0, 5, 2] = 0.0
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 7:] = False
    mask[3, :3] = False

    dense = DenseGGNN(Fin, D, L)
    ref = pyg.GatedGraphConv(D, L, aggr="add")
    with torch.no_grad():
        ref.weight.copy_(dense.weight)
        ref.rnn.load_state_dict(dense.rnn.state_dict())

    out = dense(x, a, mask)
    for b in range(B):
        idx = mask[b].nonzero().flatten()
        sub = a[b][idx][:, idx]
        src, dst = sub.nonzero(as_tuple=True)
        edge_index = torch.stack([src, dst])
        expected = ref(x[b, idx], edge_index, sub[src, dst])
        torch.testing.assert_close(out[b, idx], expected, atol=1e-5, rtol=1e-5)
        assert torch.all(out[b, ~mask[b]] == 0)


def test_dense_ggnn_rejects_wide_input():
    with pytest.raises(ValueError, match="in_channels"):
        DenseGGNN(32, 16, 2)


def test_masked_nodes_change_nothing():
    torch.manual_seed(0)
    x, a = random_graphs(3, 10, 11, seed=2)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[:, 6:] = False
    x2, a2 = x.clone(), a.clone()
    x2[:, 6:] = torch.randn_like(x2[:, 6:]) * 5
    a2[:, 6:, :] = 1.0
    a2[:, :, 6:] = 1.0
    layer = DenseGGNN(11, 32, 3)
    torch.testing.assert_close(layer(x, a, mask), layer(x2, a2, mask))

    model = DenseGraphMatching(11, 32, 2, 16).eval()
    e1 = model.embed(x, a, mask, pooling="concat")
    e2 = model.embed(x2, a2, mask, pooling="concat")
    torch.testing.assert_close(e1, e2)
    # the matching loss with the same view randomness
    l1 = pair_loss(model, x, a, mask, x.flip(0), a.flip(0), mask, generator=torch.Generator().manual_seed(5))
    l2 = pair_loss(model, x2, a2, mask, x2.flip(0), a2.flip(0), mask, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(l1, l2)


def slow_grace(z1, z2, mask, tau):
    """Per-graph, per-anchor loop of the GRACE loss (the reference)."""
    graphs = []
    for g in range(z1.shape[0]):
        idx = mask[g].nonzero().flatten().tolist()
        if not idx:
            continue
        terms = []
        for u, v in ((z1[g], z2[g]), (z2[g], z1[g])):
            u, v = F.normalize(u, dim=-1), F.normalize(v, dim=-1)
            for i in idx:
                pos = math.exp(float(u[i] @ v[i]) / tau)
                neg = sum(math.exp(float(u[i] @ v[j]) / tau) for j in idx if j != i)
                neg += sum(math.exp(float(u[i] @ u[j]) / tau) for j in idx if j != i)
                terms.append(-math.log(pos / (pos + neg)))
        # each anchor once per direction: mean over both directions
        graphs.append(sum(terms) / len(terms))
    return sum(graphs) / len(graphs)


def test_node_contrastive_loss_matches_slow_loop():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(5, 10, 8, generator=g), torch.randn(5, 10, 8, generator=g)
    mask = torch.rand(5, 10, generator=g) > 0.3
    mask[4] = False  # an empty graph is skipped
    mask[3] = False
    mask[3, 2] = True  # a one-node graph: the positive is the only candidate
    fast = node_contrastive_loss(z1, z2, mask, 0.4)
    assert math.isclose(float(fast), slow_grace(z1, z2, mask, 0.4), rel_tol=1e-5)


def test_chance_level_is_loss_of_constant_embedding():
    mask = torch.ones(6, 10, dtype=torch.bool)
    mask[2, 4:] = False
    z = torch.ones(6, 10, 4)
    loss = node_contrastive_loss(z, z, mask, 0.5)
    assert math.isclose(float(loss), chance_level(mask), rel_tol=1e-6)
    assert math.isclose(chance_level(torch.ones(1, 10, dtype=torch.bool)), math.log(19), rel_tol=1e-9)


def test_views_are_independent_symmetric_and_stay_on_real_nodes():
    x, a = random_graphs(8, 10, 11, seed=4)
    mask = torch.ones(8, 10, dtype=torch.bool)
    mask[:, 8:] = False
    a = a * mask.unsqueeze(1) * mask.unsqueeze(2)
    g = torch.Generator().manual_seed(0)
    xa, aa = augment_view(x, a, mask, 0.3, 0.3, 0.3, generator=g)
    xb, ab = augment_view(x, a, mask, 0.3, 0.3, 0.3, generator=g)
    assert not torch.equal(aa, ab) and not torch.equal(xa, xb)
    for adj in (aa, ab):
        assert torch.equal(adj, adj.transpose(1, 2))
        assert torch.all(torch.diagonal(adj, dim1=1, dim2=2) == 0)
        assert torch.all(adj[:, 8:, :] == 0) and torch.all(adj[:, :, 8:] == 0)
    # feature masking zeroes whole columns, never changes kept values
    kept = (xa != 0)
    torch.testing.assert_close(xa[kept], x[kept])
    # rates of zero give the input back
    x0, a0 = augment_view(x, a, mask, 0.0, 0.0, 0.0, generator=g)
    assert torch.equal(x0, x) and torch.equal(a0, a)


def test_masked_attention_ignores_masked_keys():
    q = torch.randn(2, 3, 4)
    k = torch.randn(2, 5, 4)
    km = torch.tensor([[True, True, False, False, False], [False] * 5])
    out = masked_attention(q, k, km)
    k2 = k.clone()
    k2[0, 2:] = 100.0
    torch.testing.assert_close(out, masked_attention(q, k2, km))
    assert torch.all(out[1] == 0)


def test_node_mask_marks_present_classes():
    x = torch.zeros(1, 10, 11)
    a = torch.zeros(1, 10, 10)
    x[0, 0, 0] = 1.0
    a[0, 3, 4] = a[0, 4, 3] = 1.0
    assert node_mask(x, a)[0].nonzero().flatten().tolist() == [0, 3, 4]


@pytest.fixture
def one_thread():
    """Tiny tensors: one torch thread (2 threads on a busy 2-core machine are far slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_matching_loss_backpropagates_and_falls_below_chance(one_thread):
    torch.manual_seed(0)
    x, a = random_graphs(16, 10, 11, seed=7)
    mask = torch.ones(16, 10, dtype=torch.bool)
    model = DenseGraphMatching(11, 32, 2, 16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(30):
        loss = pair_loss(model, x[:8], a[:8], mask[:8], x[8:], a[8:], mask[8:], generator=gen)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert all(p.grad is not None for p in model.parameters())
        opt.step()
    assert loss.item() < 0.7 * chance_level(mask)


@pytest.mark.parametrize("pooling,dim", [("concat", 320), ("mean", 32), ("sum", 32), ("concat_input", 320 + 110 + 100)])
def test_embedding_shapes(pooling, dim):
    x, a = random_graphs(3, 10, 11, seed=8)
    model = DenseGraphMatching(11, 32, 2, 16)
    assert model.embed(x, a, pooling=pooling).shape == (3, dim)


def _graphs_with_absent_classes(seed: int):
    """3 graphs of 10 class nodes, some classes absent (zero rows, no edges)."""
    x, a = random_graphs(3, 10, 11, seed=seed)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[0, 7:] = False
    mask[1, [0, 4]] = False
    x = x * mask.unsqueeze(-1)
    a = a * mask.unsqueeze(1) * mask.unsqueeze(2)
    return x, a, mask


def test_pooling_values_match_a_hand_computation_over_real_nodes():
    torch.manual_seed(0)
    x, a, mask = _graphs_with_absent_classes(seed=10)
    model = DenseGraphMatching(11, 8, 2, 4).eval()
    assert torch.equal(node_mask(x, a), mask)
    with torch.no_grad():
        h = model.encoder(x, a, mask)  # [3, 10, 8]
    for b in range(3):
        real = mask[b].nonzero().flatten()
        torch.testing.assert_close(model.embed(x, a, pooling="mean")[b], h[b, real].mean(0))
        torch.testing.assert_close(model.embed(x, a, pooling="sum")[b], h[b, real].sum(0))
        concat = model.embed(x, a, pooling="concat")[b].view(10, 8)
        torch.testing.assert_close(concat[real], h[b, real])
        assert torch.all(concat[~mask[b]] == 0)  # absent classes stay zero, in class order
        both = model.embed(x, a, pooling="concat_input")[b]
        raw = torch.cat([x[b].flatten(), a[b].flatten()])
        torch.testing.assert_close(both[:80], h[b].flatten() / h[b].norm())
        torch.testing.assert_close(both[80:], raw / raw.norm())


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_padding_does_not_change_embedding(pooling):
    """A graph padded with absent classes embeds like the same graph cropped to its real nodes."""
    torch.manual_seed(0)
    x, a, mask = _graphs_with_absent_classes(seed=11)
    model = DenseGraphMatching(11, 8, 2, 4).eval()
    padded = model.embed(x, a, mask, pooling=pooling)
    for b in range(3):
        real = mask[b].nonzero().flatten()
        xb, ab = x[b, real].unsqueeze(0), a[b][real][:, real].unsqueeze(0)
        cropped = model.embed(xb, ab, torch.ones(1, len(real), dtype=torch.bool), pooling=pooling)
        torch.testing.assert_close(padded[b], cropped[0], atol=1e-6, rtol=1e-5)


def test_encode_has_gradient_embed_is_its_no_grad_form():
    x, a, mask = _graphs_with_absent_classes(seed=12)
    model = DenseGraphMatching(11, 8, 2, 4)
    for pooling in ("concat", "mean", "concat_input"):
        enc = model.encode(x, a, mask, pooling=pooling)
        emb = model.embed(x, a, mask, pooling=pooling)
        assert enc.requires_grad and not emb.requires_grad
        torch.testing.assert_close(enc.detach(), emb)
    model.encode(x, a, mask).sum().backward()
    assert model.encoder.input[0].weight.grad is not None
    assert model.projection[0].weight.grad is None  # the embedding does not use the head
    with pytest.raises(ValueError, match="unknown pooling"):
        model.encode(x, a, mask, pooling="max")


def test_node_loss_is_float32_under_autocast_and_equals_the_fp32_loss():
    g = torch.Generator().manual_seed(13)
    z1, z2 = torch.randn(6, 10, 16, generator=g), torch.randn(6, 10, 16, generator=g)
    mask = torch.rand(6, 10, generator=g) > 0.2
    ref = node_contrastive_loss(z1, z2, mask, 0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = node_contrastive_loss(z1, z2, mask, 0.2)
    assert amp.dtype == torch.float32
    torch.testing.assert_close(amp, ref, atol=1e-6, rtol=1e-6)


def test_matching_loss_is_float32_under_autocast(one_thread):
    torch.manual_seed(0)
    x, a = random_graphs(8, 10, 11, seed=14)
    mask = torch.ones(8, 10, dtype=torch.bool)
    model = DenseGraphMatching(11, 16, 2, 8)
    ref = pair_loss(model, x[:4], a[:4], mask[:4], x[4:], a[4:], mask[4:], generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = pair_loss(model, x[:4], a[:4], mask[:4], x[4:], a[4:], mask[4:], generator=torch.Generator().manual_seed(1))
    assert amp.dtype == torch.float32
    # the encoder ran in bf16 (about 3 significant digits); the loss itself adds no rounding
    torch.testing.assert_close(amp, ref, atol=0.0, rtol=2e-2)


def slow_match(model, xs, adjs, mask1, mask2):
    """Reference of DenseGraphMatching.match: one pair at a time, real nodes only,
    attention written out node by node."""
    V, B, N, _ = xs.shape
    out = torch.zeros(V, B, N, model.projection[-1].out_features)
    for b in range(B):
        masks = [mask1[b], mask1[b], mask2[b], mask2[b]]
        idx = [m.nonzero().flatten() for m in masks]
        h = []
        for v in range(4):  # encode each view cropped to its real nodes
            i = idx[v]
            x = xs[v, b][i].unsqueeze(0)
            a = adjs[v, b][i][:, i].unsqueeze(0)
            h.append(model.encoder(x, a, torch.ones(1, len(i), dtype=torch.bool))[0])

        def attend(q, keys):
            rows = []
            for qi in q:
                w = torch.softmax(torch.stack([qi @ k / math.sqrt(len(qi)) for k in keys]), 0)
                rows.append(sum(wj * k for wj, k in zip(w, keys)))
            return torch.stack(rows)

        def fuse(layer, hv, mu):
            return hv + F.elu(layer.lin(torch.cat([hv, hv - mu], -1)))

        partner = [1, 0, 3, 2]
        h = [fuse(model.cross_view, h[v], attend(h[v], list(h[partner[v]]))) for v in range(4)]
        other = [[2, 3], [2, 3], [0, 1], [0, 1]]
        h = [fuse(model.cross_graph, h[v], attend(h[v], list(h[other[v][0]]) + list(h[other[v][1]])))
             for v in range(4)]
        for v in range(4):
            out[v, b, idx[v]] = model.projection(h[v])
    return out


def test_matching_step_matches_slow_per_pair_reference():
    torch.manual_seed(0)
    B, N = 3, 10
    x, a = random_graphs(2 * B, N, 11, seed=9)
    mask = torch.rand(2 * B, N, generator=torch.Generator().manual_seed(1)) > 0.3
    a = a * mask.unsqueeze(1) * mask.unsqueeze(2)
    model = DenseGraphMatching(11, 16, 2, 8)
    g = torch.Generator().manual_seed(2)
    views = [augment_view(x[s], a[s], mask[s], 0.2, 0.2, 0.2, generator=g)
             for s in (slice(0, B), slice(0, B), slice(B, None), slice(B, None))]
    xs, adjs = torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])
    with torch.no_grad():
        fast = model.match(xs, adjs, mask[:B], mask[B:])
        slow = slow_match(model, xs, adjs, mask[:B], mask[B:])
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
