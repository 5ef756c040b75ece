"""Pre-LN transformer block whose attention heads are separate, addressable modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from traindyn.models._common import module_params
from traindyn.param import Parameterization, ParamLinear, ResidualBlock

__all__ = [
    "AttentionHead",
    "Block",
    "FeedForward",
    "MultiHeadAttention",
    "head_modules",
    "transformer_ntk_modules",
]


class AttentionHead(nn.Module):
    """One head with its own ``q``, ``k``, ``v`` (``d_model -> d_head``, hidden role).

    Separate parameter tensors per head let a head be measured (its modular NTK) and
    skipped (``requires_grad`` off) on its own.

    Args:
        d_model: Model width N.
        d_head: Head size.
        param: The parameterization (sets ``logit_scale``).
        causal: Whether position t attends only to positions <= t.
        bias: Whether q, k, v have biases.
    """

    def __init__(
        self, d_model: int, d_head: int, param: Parameterization, causal: bool, bias: bool
    ) -> None:
        super().__init__()
        kw = {"role": "hidden", "param": param, "width": d_model, "bias": bias}
        self.q = ParamLinear(d_model, d_head, **kw)
        self.k = ParamLinear(d_model, d_head, **kw)
        self.v = ParamLinear(d_model, d_head, **kw)
        self.causal = causal
        self.logit_scale = param.attn_logit_scale(d_head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend: (B, T, N) -> (B, T, d_head)."""
        return self.attend(self.q(x), self.k(x), self.v(x))  # (B, T, D)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Scaled (causal) softmax attention: (..., T, D) each -> (..., T, D)."""
        att = (q @ k.transpose(-2, -1)) * self.logit_scale  # (..., T, T)
        if self.causal:
            T = q.shape[-2]
            future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)  # (T, T)
            att = att.masked_fill(future, float("-inf"))
        return F.softmax(att, dim=-1) @ v  # (..., T, D)


class MultiHeadAttention(nn.Module):
    """``heads`` (an ``nn.ModuleList`` of ``AttentionHead``) concatenated, then ``o`` (W_O).

    Args:
        d_model: Model width N.
        n_heads: Number of heads; ``d_head = d_model // n_heads``.
        param: The parameterization.
        causal: Whether attention is causal.
        bias: Whether the projections have biases.
    """

    def __init__(
        self, d_model: int, n_heads: int, param: Parameterization, causal: bool, bias: bool
    ) -> None:
        super().__init__()
        d_head = d_model // n_heads
        self.heads = nn.ModuleList(
            [AttentionHead(d_model, d_head, param, causal, bias) for _ in range(n_heads)]
        )
        self.o = ParamLinear(
            n_heads * d_head, d_model, role="hidden", param=param, width=d_model, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend with every head and project back: (B, T, N) -> (B, T, N).

        The heads' q, k, v weights are concatenated into one projection and the heads attend
        as one batched call: the same function as each head's own ``forward`` (tested to
        1e-12, JVPs and Hessian-vector products included), and a GPT training step 1.1-1.4x
        faster at widths 128-32 on one CPU thread (``benchmarks/bench_attention.py``). The gradients still
        reach each head's own parameters. When only some heads train (MAT's gate), the
        trained and the frozen heads are two such batches, so no weight gradient of a frozen
        head is computed: the work that skipping it saves. A forward hook on a head (e.g. the
        coordinate check's), or a head only partly frozen, takes the per-head path, which
        calls every head's ``forward``.
        """
        heads = self.heads
        flags = [{p.requires_grad for p in h.parameters()} for h in heads]
        if any(len(f) > 1 for f in flags) or any(
            h._forward_hooks or h._forward_pre_hooks for h in heads
        ):
            return self.o(torch.cat([head(x) for head in heads], dim=-1))  # (B, T, N)
        *batch, T, n = x.shape
        x = x.reshape(-1, T, n)  # (B, T, N)
        groups = [[i for i, f in enumerate(flags) if f == {on}] for on in (True, False)]
        groups = [g for g in groups if g]
        outs = [self._attend_heads(x, [heads[i] for i in g]) for g in groups]  # (B, Hg, T, D) each
        if len(outs) == 1:
            out = outs[0]  # (B, H, T, D)
        else:  # trained heads first, then frozen: back to head order
            order = [i for g in groups for i in g]
            out = torch.cat(outs, dim=1)[
                :, [order.index(i) for i in range(len(heads))]
            ]  # (B, H, T, D)
        return self.o(out.transpose(1, 2).reshape(*batch, T, -1))  # (B, T, N)

    @staticmethod
    def _attend_heads(x: torch.Tensor, heads: list[AttentionHead]) -> torch.Tensor:
        """Heads with one concatenated q, k, v projection, attending at once: (B, T, N) -> (B, Hg, T, D)."""
        first, (B, T, _) = heads[0], x.shape
        w = torch.cat([lin.weight for h in heads for lin in (h.q, h.k, h.v)])  # (3 Hg D, N)
        qkv = first.q._scale(F.linear(x, w))  # (B, T, 3 Hg D): q, k, v share one multiplier
        if first.q.bias is not None:
            qkv = qkv + torch.cat([lin.bias for h in heads for lin in (h.q, h.k, h.v)])
        qkv = qkv.view(B, T, len(heads), 3, first.q.out_features).permute(
            3, 0, 2, 1, 4
        )  # (3, B, Hg, T, D)
        # plain matmuls, not F.scaled_dot_product_attention: the spectra need forward-mode AD
        # and double backward through attention, which the fused CPU kernel lacks
        return first.attend(qkv[0], qkv[1], qkv[2])  # (B, Hg, T, D)


class FeedForward(nn.Module):
    """``down(gelu(up(x)))`` with ``up: N -> ratio N`` and ``down: ratio N -> N`` (hidden role).

    Args:
        d_model: Model width N.
        mlp_ratio: Hidden size over N.
        param: The parameterization.
        bias: Whether the layers have biases.
    """

    def __init__(self, d_model: int, mlp_ratio: int, param: Parameterization, bias: bool) -> None:
        super().__init__()
        kw = {"role": "hidden", "param": param, "width": d_model, "bias": bias}
        self.up = ParamLinear(d_model, mlp_ratio * d_model, **kw)
        self.down = ParamLinear(mlp_ratio * d_model, d_model, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP: (B, T, N) -> (B, T, N)."""
        return self.down(F.gelu(self.up(x)))  # (B, T, N)


class Block(ResidualBlock):
    """Pre-LN block: ``x + s attn(ln1(x))``, then ``x + s mlp(ln2(x))``, ``s = branch_scale``.

    Self-contained (no shared state) so that deep copies can be inserted anywhere in a
    ``ModuleList`` of blocks. Zeroing ``attn.o.weight`` and ``mlp.down.weight`` (no
    biases) makes the block exactly the identity.

    Args:
        d_model: Model width N.
        n_heads: Number of attention heads.
        param: The parameterization.
        depth: L, the number of blocks in the model (sets ``branch_scale``).
        causal: Whether attention is causal.
        mlp_ratio: MLP hidden size over N.
        bias: Whether linear layers and LayerNorms have biases.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        param: Parameterization,
        depth: int,
        causal: bool,
        mlp_ratio: int = 4,
        bias: bool = False,
    ) -> None:
        super().__init__(param, depth)
        self.ln1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = MultiHeadAttention(d_model, n_heads, param, causal, bias)
        self.ln2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = FeedForward(d_model, mlp_ratio, param, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block: (B, T, N) -> (B, T, N)."""
        x = x + self.branch_scale * self.attn(self.ln1(x))  # (B, T, N)
        return x + self.branch_scale * self.mlp(self.ln2(x))  # (B, T, N)


def head_modules(model: nn.Module) -> dict[str, AttentionHead]:
    """Return ``"blocks.{l}.attn.heads.{h}" -> head`` for every head of ``model.blocks``, in order."""
    return {
        f"blocks.{layer}.attn.heads.{h}": head
        for layer, block in enumerate(model.blocks)
        for h, head in enumerate(block.attn.heads)
    }


def transformer_ntk_modules(model: nn.Module, all_params: bool) -> dict[str, list[str]]:
    """Map each head to its q, k, v parameters; with ``all_params`` also every other layer.

    Args:
        model: A transformer with ``blocks`` of ``Block``.
        all_params: Also list every other parameter-owning leaf module (embeddings,
            ``attn.o``, MLP layers, LayerNorms, readout), so that the modules partition
            the parameters and their kernels sum to the full NTK.

    Returns:
        Module name -> full parameter names; heads first, in block order.
    """
    names = list(head_modules(model))
    if all_params:
        heads = tuple(n + "." for n in names)
        names += [
            n
            for n, m in model.named_modules()
            if n
            and not n.startswith(heads)
            and not isinstance(m, AttentionHead)
            and any(True for _ in m.parameters(recurse=False))
        ]
    return module_params(model, names)
