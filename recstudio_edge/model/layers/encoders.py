"""History encoders shared by the zoo: one class each, composed by every model that uses it.

- ``TargetAttentionEncoder``: DIN's (``seq_trans`` = Linear + Tanh on the history, then
  ``TargetAttention`` with the target as query): DIN and PINRec's DIN trunk.
- ``TransformerStack``: learned right-aligned positions, dropout, ``TransformerBlock``s with a
  causal (SASRec, PINRec's SASRec trunk) or padding-only (BERT4Rec) mask, a final layer norm.
- ``GRUStack``: dropout, ``GRUEncoder`` (exact for left padding), a linear projection: GRU4Rec
  and PINRec's GRU4Rec trunk.

Each takes item embeddings the model has already made (a model's item table is its own: scaled,
shared with the item tower, or passed through a plugin site first) and the id history ``seq``
(left-padded with 0) for its mask. Parameters are created in the order the models created them
before these classes existed, so a model built under a given seed starts from the same weights.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .activations import Tanh
from .attention import TargetAttention, causal_padding_mask, padding_mask
from .dropout import FastDropout
from .sequence import GRUEncoder, TransformerBlock, right_aligned_positions, run_blocks

MASKS = {"causal": causal_padding_mask, "padding": padding_mask}


class TargetAttentionEncoder(nn.Module):
    """DIN's history encoder: ``seq_trans`` (Linear + Tanh) on the history, then target attention.

    ``forward(target [B, D], history [B, L, D], seq [B, L]) -> [B, D]``: the attended history,
    padding (``seq == 0``) masked; an empty history gives zeros. ``history`` and ``seq`` may hold
    ``P`` histories shared by ``B = R * P`` targets in ``R`` blocks (``TargetAttention``).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.seq_trans = nn.Sequential(nn.Linear(dim, dim), Tanh())
        self.attention = TargetAttention(dim)

    def forward(self, target: torch.Tensor, history: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        return self.attention(target, self.seq_trans(history), seq != 0)

    def forward_table(self, target: torch.Tensor, table: torch.Tensor, ids: torch.Tensor,
                      seq: torch.Tensor) -> torch.Tensor:
        """``forward`` with the history given as rows ``ids [B, L]`` of an embedding ``table [N, D]``
        (``seq [B, L]`` for the mask; ``ids`` is ``seq`` itself, or offset into a per-group table;
        both may hold ``P`` histories shared by ``B = R * P`` target rows, see ``TargetAttention``).

        ``seq_trans`` acts on each item alone, so it runs once per table row and its output is
        gathered per position: the same values and gradients as ``forward(target, table[ids], seq)``
        at N rows of work instead of B x L (ml-1m DIN training: 3.7k rows against 102k positions
        per batch)."""
        return self.attention(target, F.embedding(ids, self.seq_trans(table)), seq != 0)


class TransformerStack(nn.Module):
    """Positions, dropout, transformer blocks and a final layer norm over a left-padded history.

    ``forward(x [B, L, D], seq [B, L], last_only=False) -> [B, L, D]`` (``[B, 1, D]`` with
    ``last_only``: the final block computes the latest position only, exact). ``x`` is the item
    embeddings of ``seq`` (SASRec scales them by sqrt(D) first); the stack adds the position
    embeddings, right-aligned so that the latest item is always position ``max_seq_len - 1``,
    applies ``input_norm`` (BERT4Rec's embedding layer norm) when set, dropout, zeroes the
    padded positions, runs the blocks (``run_blocks``) under the ``mask`` (``"causal"`` or
    ``"padding"``, see ``layers.attention``) and the final layer norm.

    ``position_init`` is applied to the position table as soon as it is made, before the blocks
    draw their weights (PINRec's SASRec trunk: Xavier); a model that initialises the table later
    (SASRec, BERT4Rec) leaves it ``None`` and writes ``self.encoder.pos_emb``.
    """

    def __init__(self, dim: int, max_seq_len: int, num_blocks: int, num_heads: int, inner_dim: int,
                 dropout: float, activation: str = "relu", mask: str = "causal", eps: float = 1e-8,
                 input_norm: bool = False, position_init: Optional[Callable[[torch.Tensor], object]] = None):
        super().__init__()
        if mask not in MASKS:
            raise ValueError(f"mask {mask!r}: expected one of {sorted(MASKS)}")
        self.max_seq_len, self.mask = int(max_seq_len), mask
        self.pos_emb = nn.Embedding(self.max_seq_len, dim)
        if position_init is not None:
            position_init(self.pos_emb.weight)
        self.emb_ln = nn.LayerNorm(dim, eps=eps) if input_norm else None
        self.drop = FastDropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, inner_dim, dropout, activation)
                                    for _ in range(int(num_blocks)))
        self.last_ln = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, seq: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        pos = right_aligned_positions(seq, self.max_seq_len)
        keep = (seq != 0).unsqueeze(-1)
        x = x + self.pos_emb(pos).unsqueeze(0)
        if self.emb_ln is not None:
            x = self.emb_ln(x)
        x = self.drop(x) * keep
        return self.last_ln(run_blocks(self.blocks, x, MASKS[self.mask](seq), keep, last_only))


class GRUStack(nn.Module):
    """Dropout, a GRU over the left-padded history (``GRUEncoder``), a projection to ``out_dim``.

    ``forward(x [B, L, D], seq_len [B], last_only=False) -> [B, L, out_dim]`` (``[B, 1, out_dim]``
    with ``last_only``: only the latest position is projected).
    """

    def __init__(self, dim: int, hidden: int, num_layers: int = 1, dropout: float = 0.0,
                 out_dim: Optional[int] = None):
        super().__init__()
        self.drop = FastDropout(dropout)
        self.encoder = GRUEncoder(dim, hidden, num_layers)
        self.proj = nn.Linear(hidden, out_dim or dim)

    def forward(self, x: torch.Tensor, seq_len: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        out = self.encoder(self.drop(x), seq_len, last_only)
        return self.proj(out)


def pair_features(target: torch.Tensor, summary: torch.Tensor, product: bool) -> torch.Tensor:
    """The classifier input of the target-history CTR models (DIN, PINRec): ``[target, summary]``,
    with ``product`` also ``target * summary`` (``[B, 2D]`` or ``[B, 3D]``)."""
    return torch.cat([target, summary, target * summary] if product else [target, summary], dim=-1)


def batch_histories(batch) -> torch.Tensor:
    """The histories of a target-history CTR batch (DIN, PINRec): ``batch["seq_unique"] [P, L]``
    where the data pipeline set it, else ``batch["seq"] [B, L]``.

    A training batch is a block of positives and ``R - 1`` blocks of negatives drawn for the same
    rows, so its ``B = R * P`` rows hold ``P`` distinct histories: ``seq == seq_unique.repeat(R, 1)``
    (checked here: a batch that breaks it is an error). Models read each history once
    (``TargetAttention``: row ``b`` attends over history ``b % P``)."""
    seq = batch["seq"]
    base = batch.get("seq_unique")
    if base is None or base.size(0) == seq.size(0):
        return seq
    check_repeats(seq, base)
    return base


def padded_table(weight: torch.Tensor) -> torch.Tensor:
    """An embedding table with its padding row 0 as zeros that get no gradient, as ``nn.Embedding``
    with ``padding_idx=0`` keeps it: the table the table paths (``forward_table``, PINRec's site
    table) compute on and gather from."""
    return torch.cat([weight.new_zeros(1, weight.size(1)), weight[1:]])


def check_repeats(rows: torch.Tensor, base: torch.Tensor) -> None:
    """A ``ValueError`` unless ``rows`` is ``base`` repeated along the first axis
    (``rows == base.repeat(R, ...)``)."""
    B, P = rows.size(0), base.size(0)
    if P == 0 or B % P or not torch.equal(rows.reshape(B // P, *base.shape), base.expand(B // P, *base.shape)):
        raise ValueError(f"batch rows ({tuple(rows.shape)}) are not the {tuple(base.shape)} shared histories' rows "
                         f"repeated (batch['seq_unique'] must satisfy seq == seq_unique.repeat(R, 1))")


__all__ = ["TargetAttentionEncoder", "TransformerStack", "GRUStack", "pair_features", "batch_histories", "check_repeats", "padded_table"]
