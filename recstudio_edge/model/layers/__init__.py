"""Plain ``nn.Module`` building blocks shared by models (no training logic here)."""
from .activations import Tanh, tanh
from .attention import TargetAttention, causal_padding_mask, padding_mask
from .dropout import FastDropout, fast_dropout
from .encoders import (GRUStack, TargetAttentionEncoder, TransformerStack, batch_histories, check_repeats,
                       padded_table, pair_features)
from .mlp import MLP
from .sequence import GRUEncoder, TransformerBlock, right_aligned_positions, run_blocks

__all__ = ["Tanh", "tanh", "FastDropout", "fast_dropout", "MLP", "TargetAttention", "causal_padding_mask", "padding_mask", "GRUEncoder", "TransformerBlock",
           "right_aligned_positions", "run_blocks", "TargetAttentionEncoder", "TransformerStack", "GRUStack",
           "pair_features", "batch_histories", "check_repeats", "padded_table"]
