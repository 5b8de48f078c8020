"""Gated graph neural network on dense, batched graphs.

The dense counterpart of ``torch_geometric.nn.GatedGraphConv`` (Li et al., 2016,
"Gated Graph Sequence Neural Networks"): the same parameters and the same
arithmetic, but on padded tensors ``x: [B, N, F]``, ``adj: [B, N, N]``,
``mask: [B, N]`` instead of a sparse edge list, so a batch of small graphs (the
10-node GF graphs) is one batched matrix product per step, with no loop over graphs.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn


class DenseGGNN(nn.Module):
    r"""Dense gated graph convolution.

    .. math::
        h_i^{(0)} = x_i \,\Vert\, 0, \qquad
        m_i^{(l+1)} = \sum_j A_{j,i}\, \Theta_l\, h_j^{(l)}, \qquad
        h_i^{(l+1)} = \mathrm{GRU}(m_i^{(l+1)}, h_i^{(l)})

    for ``l = 0 .. num_layers - 1``. As in PyG, the input is zero-padded to
    ``out_channels`` (so ``in_channels <= out_channels``), there is one weight
    matrix ``Θ_l`` per step, messages are summed (``aggr='add'``) and one
    ``GRUCell`` is shared by all steps. ``adj[b, j, i]`` is the weight of the
    edge from node ``j`` to node ``i`` (the GF adjacency is symmetric).

    Masked (padding) nodes neither send nor receive messages, and their output
    rows are zero.

    Args:
        in_channels: node feature size ``F`` of the input.
        out_channels: node state size ``D`` (``>= in_channels``).
        num_layers: number of propagation steps ``L``.
        bias: whether the GRU cell has biases.
    """

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, bias: bool = True) -> None:
        super().__init__()
        if in_channels > out_channels:
            raise ValueError(
                f"DenseGGNN: in_channels ({in_channels}) must not exceed out_channels ({out_channels}); "
                "the input is zero-padded to out_channels as in torch_geometric's GatedGraphConv"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_layers = num_layers
        self.weight = nn.Parameter(torch.empty(num_layers, out_channels, out_channels))
        self.rnn = nn.GRUCell(out_channels, out_channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Same initialisation as PyG: uniform(±1/sqrt(out_channels)) for Θ, default GRU init."""
        bound = 1.0 / math.sqrt(self.out_channels)
        nn.init.uniform_(self.weight, -bound, bound)
        self.rnn.reset_parameters()

    def forward(self, x: Tensor, adj: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Propagate node states.

        Args:
            x: ``[B, N, F]`` node features (``F = in_channels``).
            adj: ``[B, N, N]`` edge weights, ``adj[b, j, i]`` for the edge j -> i.
            mask: ``[B, N]`` bool, True for real nodes; None means all nodes are real.

        Returns:
            ``[B, N, out_channels]`` node states, zero at masked nodes.
        """
        B, N, F = x.shape
        if F != self.in_channels:
            raise ValueError(f"DenseGGNN: expected {self.in_channels} input features, got {F}")
        if F < self.out_channels:
            x = torch.cat([x, x.new_zeros(B, N, self.out_channels - F)], dim=-1)
        if mask is not None:
            m = mask.to(x.dtype)
            x = x * m.unsqueeze(-1)
            adj = adj * m.unsqueeze(-1) * m.unsqueeze(-2)
        adj_t = adj.transpose(1, 2)  # [B, N(target), N(source)]
        h = x
        for layer in range(self.num_layers):
            msg = adj_t @ (h @ self.weight[layer])  # [B, N, D]
            h = self.rnn(msg.reshape(B * N, -1), h.reshape(B * N, -1)).view(B, N, -1)
            if mask is not None:
                h = h * m.unsqueeze(-1)
        return h

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, num_layers={self.num_layers})"
