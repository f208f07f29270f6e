"""Sequence encoders: a SASRec transformer block and a GRU that handles left padding."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import FastDropout, fast_dropout


def right_aligned_positions(seq: torch.Tensor, max_len: int) -> torch.Tensor:
    """Position ids ``[L]`` for a left-padded ``seq [B, L]``: the latest item is always position
    ``max_len - 1``, as in training; a sequence longer than the table is an error (a constant
    shape check for the ONNX exporters)."""
    L = seq.size(1)
    if L > max_len:
        raise ValueError(f"sequence length {L} exceeds max_seq_len {max_len}")
    return torch.arange(max_len - L, max_len, device=seq.device)


def run_blocks(blocks, x: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor, last_only: bool = False):
    """``x [B, L, D]`` through the transformer ``blocks``, padded positions (``keep [B, L, 1]`` false)
    zeroed after each; with ``last_only`` the final block computes only the last position."""
    for i, block in enumerate(blocks):
        last = last_only and i == len(blocks) - 1
        x = block(x, mask, last_only=last) * (keep[:, -1:] if last else keep)
    return x


class TransformerBlock(nn.Module):
    """SASRec block (Kang & McAuley 2018, official code's order): ``Q = LN(x)``,
    ``x = Q + MHA(Q, x, x | causal)``, then ``x = x + FFN(LN(x))`` with dropout."""

    def __init__(self, dim: int, num_heads: int, inner_dim: int, dropout: float, activation: str = "relu"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.h = num_heads
        self.ln_attn = nn.LayerNorm(dim, eps=1e-8)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ln_ffn = nn.LayerNorm(dim, eps=1e-8)
        self.ffn1 = nn.Linear(dim, inner_dim)
        self.ffn2 = nn.Linear(inner_dim, dim)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.drop = FastDropout(dropout)
        self.p = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``x [B, L, D]`` -> ``[B, L, D]``; with ``last_only`` just the last position ``[B, 1, D]``
        (exact: keys and values still come from every position), which is all a next-item
        query needs from the final block."""
        B, L, D = x.shape
        if last_only:
            mask = mask[:, :, -1:, :]
        q_in = self.ln_attn(x[:, -1:] if last_only else x)
        wq, wk, wv = self.qkv.weight.chunk(3)
        bq, bk, bv = self.qkv.bias.chunk(3)
        split = lambda t: t.view(B, t.size(1), self.h, D // self.h).transpose(1, 2)  # noqa: E731
        q = split(F.linear(q_in, wq, bq))
        k = split(F.linear(x, wk, bk))
        v = split(F.linear(x, wv, bv))
        if self.training and self.p > 0:  # attention dropout with the cheap mask (see dropout.py)
            w = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D // self.h))
            w = torch.softmax(w.masked_fill(~mask, float("-inf")), dim=-1)
            att = fast_dropout(w, self.p, True) @ v
        else:
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = q_in + self.drop(self.out(att.transpose(1, 2).reshape(B, q_in.size(1), D)))
        y = self.ln_ffn(x)
        return y + self.drop(self.ffn2(self.drop(self.act(self.ffn1(y)))))


class GRUEncoder(nn.Module):
    """GRU over left-padded sequences, exact for every real position.

    Rows are rolled so that real items come first (right padding), run through the GRU,
    and rolled back, so padding never feeds the hidden state of a real position.
    """

    def __init__(self, in_dim: int, hidden: int, num_layers: int = 1):
        super().__init__()
        self.gru = nn.GRU(in_dim, hidden, num_layers=num_layers, batch_first=True)

    def forward(self, x: torch.Tensor, seq_len: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``x [B, L, D]`` -> ``[B, L, H]``; with ``last_only`` the latest position only, ``[B, 1, H]``
        (read where it lies after the roll, without rolling the whole output back)."""
        B, L, _ = x.shape
        shift = (L - seq_len).unsqueeze(1)
        ar = torch.arange(L, device=x.device).unsqueeze(0)
        to_right = ((ar + shift) % L).unsqueeze(-1)
        out, _ = self.gru(torch.gather(x, 1, to_right.expand(-1, -1, x.size(-1))))
        if last_only:  # left position L - 1 sits at (seq_len - 1) mod L after the roll
            return out[torch.arange(B, device=x.device), (seq_len - 1) % L].unsqueeze(1)
        back = ((ar - shift) % L).unsqueeze(-1)
        return torch.gather(out, 1, back.expand(-1, -1, out.size(-1)))
