"""A GPT-style character language model: pre-LN decoder-only transformer with addressable heads."""

from __future__ import annotations

import torch
from torch import nn

from traindyn.models.attention import AttentionHead, Block, head_modules, transformer_ntk_modules
from traindyn.param import ParamEmbedding, Parameterization, ParamLinear

__all__ = ["GPT"]


class GPT(nn.Module):
    """Token + position embeddings, ``depth`` causal pre-LN blocks, final LayerNorm, head.

    Parameter names: ``wte``, ``wpe``, ``blocks.{l}.ln1``, ``blocks.{l}.attn.heads.{h}.{q,k,v}``,
    ``blocks.{l}.attn.o`` (W_O), ``blocks.{l}.ln2``, ``blocks.{l}.mlp.{up,down}``,
    ``ln_f``, ``head``. ``blocks`` is an ``nn.ModuleList``: depth growth inserts deep
    copies of blocks, and ``depth`` follows its length.

    Args:
        width: d_model (N).
        depth: Number of blocks L, at least 1.
        param: The parameterization.
        vocab_size: Number of tokens.
        block_size: Maximum context length.
        n_heads: Heads per block; must divide ``width``.
        mlp_ratio: MLP hidden size over N.
        bias: Whether linear layers and LayerNorms have biases.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        param: Parameterization,
        vocab_size: int,
        block_size: int = 64,
        n_heads: int = 4,
        mlp_ratio: int = 4,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.width, self.param = width, param
        self.vocab_size, self.block_size, self.n_heads = vocab_size, block_size, n_heads
        self.wte = ParamEmbedding(vocab_size, width, param=param, width=width)
        self.wpe = ParamEmbedding(block_size, width, param=param, width=width)
        self.blocks = nn.ModuleList(
            [
                Block(width, n_heads, param, depth, causal=True, mlp_ratio=mlp_ratio, bias=bias)
                for _ in range(depth)
            ]
        )
        self.ln_f = nn.LayerNorm(width, bias=bias)
        self.head = ParamLinear(width, vocab_size, role="readout", param=param, width=width)

    @property
    def depth(self) -> int:
        """Number of blocks L (follows ``len(self.blocks)`` after growth)."""
        return len(self.blocks)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Map token ids (B, T), T <= block_size, to next-token logits (B, T, vocab_size)."""
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.block_size}")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, N)
        for block in self.blocks:
            x = block(x)  # (B, T, N)
        return self.head(self.ln_f(x))  # (B, T, V)

    def head_modules(self) -> dict[str, AttentionHead]:
        """Return ``"blocks.{l}.attn.heads.{h}" -> head module``, in block then head order."""
        return head_modules(self)

    def ntk_modules(self, all_params: bool = False) -> dict[str, list[str]]:
        """Map each attention head to its q, k, v parameter names (MAT's modules).

        Args:
            all_params: Also list every other layer (embeddings, W_O, MLP, LayerNorms,
                head) as its own module, so the modules cover every parameter once.

        Returns:
            Module name -> full parameter names.
        """
        return transformer_ntk_modules(self, all_params)
