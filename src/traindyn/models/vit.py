"""A Vision Transformer for small images: patch embedding, pre-LN blocks, cls token or mean pool."""

from __future__ import annotations

import torch
from torch import nn

from traindyn.models.attention import AttentionHead, Block, head_modules, transformer_ntk_modules
from traindyn.param import ParamEmbedding, Parameterization, ParamLinear

__all__ = ["ViT"]


class ViT(nn.Module):
    """Non-overlapping patches -> ``patch_embed`` (input role) + ``pos``; blocks; ``ln_f``; ``head``.

    With ``pool="cls"`` a learned ``cls`` token (a one-row ``ParamEmbedding``) is
    prepended and the head reads it; with ``pool="mean"`` the head reads the mean token.

    Args:
        width: d_model (N).
        depth: Number of blocks L, at least 1.
        param: The parameterization.
        image_size: Side of the square input image.
        patch_size: Side of a patch; must divide ``image_size`` (7 or 4 for 28x28).
        in_channels: Image channels.
        out_dim: Number of classes.
        n_heads: Heads per block; must divide ``width``.
        mlp_ratio: MLP hidden size over N.
        pool: ``"cls"`` or ``"mean"``.
        bias: Whether linear layers and LayerNorms have biases.
    """

    def __init__(
        self,
        width: int,
        depth: int,
        param: Parameterization,
        image_size: int = 28,
        patch_size: int = 7,
        in_channels: int = 1,
        out_dim: int = 10,
        n_heads: int = 4,
        mlp_ratio: int = 4,
        pool: str = "cls",
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.width, self.param, self.patch_size, self.pool = width, param, patch_size, pool
        n_tokens = (image_size // patch_size) ** 2 + (pool == "cls")
        self.patch_embed = ParamLinear(
            in_channels * patch_size**2, width, role="input", param=param, width=width, bias=bias
        )
        self.cls = ParamEmbedding(1, width, param=param, width=width) if pool == "cls" else None
        self.pos = ParamEmbedding(n_tokens, width, param=param, width=width)
        self.blocks = nn.ModuleList(
            [
                Block(width, n_heads, param, depth, causal=False, mlp_ratio=mlp_ratio, bias=bias)
                for _ in range(depth)
            ]
        )
        self.ln_f = nn.LayerNorm(width, bias=bias)
        self.head = ParamLinear(width, out_dim, role="readout", param=param, width=width, bias=bias)

    @property
    def depth(self) -> int:
        """Number of blocks L."""
        return len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (B, C, H, W) to logits (B, out_dim)."""
        B, C, H, W = x.shape
        p = self.patch_size
        patches = x.reshape(B, C, H // p, p, W // p, p)  # (B, C, h, p, w, p)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * p * p)  # (B, P, C p p)
        h = self.patch_embed(patches)  # (B, P, N)
        if self.cls is not None:
            cls = self.cls(torch.zeros(B, 1, dtype=torch.long, device=x.device))  # (B, 1, N)
            h = torch.cat([cls, h], dim=1)  # (B, T, N)
        h = h + self.pos(torch.arange(h.shape[1], device=x.device))  # (B, T, N)
        for block in self.blocks:
            h = block(h)  # (B, T, N)
        h = self.ln_f(h)  # (B, T, N)
        return self.head(h[:, 0] if self.cls is not None else h.mean(dim=1))  # (B, out_dim)

    def head_modules(self) -> dict[str, AttentionHead]:
        """Return ``"blocks.{l}.attn.heads.{h}" -> head module``, in block then head order."""
        return head_modules(self)

    def ntk_modules(self, all_params: bool = False) -> dict[str, list[str]]:
        """Map each attention head to its q, k, v parameter names.

        Args:
            all_params: Also list every other layer (patch embedding, cls, positions,
                W_O, MLP, LayerNorms, head) as its own module.

        Returns:
            Module name -> full parameter names.
        """
        return transformer_ntk_modules(self, all_params)
