"""Growth plans: for each block of the grown model, the base block it is built from.

A depth plan is a list with one entry per block of the grown model, ``{"src": i, "zero":
z}``: ``src`` is the base block copied (``None``: a new block with the target model's
default init), and ``zero`` marks a new block whose attention output projection and MLP
down-projection are zeroed, so that in a pre-LN residual block it is exactly the identity
(function-preserving growth). Plans are plain data (no torch) so the study's grid can
write them into run specs and tests can check them without building a model.

The pool (docs/methods.md, lag study), base ``L`` blocks grown by ``b``:

================  =========================================================  ============
strategy          plan                                                       L=4, b=2
================  =========================================================  ============
copy_top          append copies of the last b blocks (gradual stacking)      012323
copy_middle       duplicate the middle b blocks in place (MIDAS)             012123
copy_bottom       duplicate the first b blocks in place                      010123
interleave        duplicate b evenly spaced blocks, each right after itself  001233
stack             the whole stack twice (b = L only)                         01230123
random_top        b new blocks (default init) on top                         0123nn
random_middle     b new blocks in the middle                                 01nn23
fp_<strategy>     <strategy> with its new blocks zeroed (identity)           e.g. 0123zz
net2wider         MLP hidden width times ``widen`` (Net2WiderNet), same L
scratch           the target model from its default init (control)
================  =========================================================  ============
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEPTH_STRATEGIES", "STRATEGIES", "depth_plan", "duplicate_plan", "grown_depth", "plan_string"]

DEPTH_STRATEGIES = ("copy_top", "copy_middle", "copy_bottom", "interleave", "stack", "random_top",
                    "random_middle")  # fmt: skip
STRATEGIES = (*DEPTH_STRATEGIES, *(f"fp_{s}" for s in DEPTH_STRATEGIES), "net2wider", "scratch")


def _entries(srcs: list[int | None], new: set[int], zero: bool) -> list[dict[str, Any]]:
    # New blocks: the second occurrence of a copied block, or a random block.
    return [{"src": s, "zero": zero and i in new} for i, s in enumerate(srcs)]


def depth_plan(strategy: str, base_depth: int, added: int) -> list[dict[str, Any]]:
    """The plan of a depth-growth strategy (see the module docstring).

    Args:
        strategy: One of ``DEPTH_STRATEGIES``, optionally prefixed ``fp_``.
        base_depth: L, blocks of the base model (>= 1).
        added: b, blocks added (1 <= b <= L; ``stack`` needs b = L).

    Returns:
        One ``{"src": int | None, "zero": bool}`` per block of the grown model.

    Raises:
        ValueError: On an unknown strategy or sizes the strategy cannot take.
    """
    zero = strategy.startswith("fp_")
    name = strategy[3:] if zero else strategy
    L, b = base_depth, added
    if name not in DEPTH_STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: expected one of {STRATEGIES[:-2]}")
    if L < 1 or not 1 <= b <= L:
        raise ValueError(f"strategy {strategy!r}: needs 1 <= added ({b}) <= base_depth ({L})")
    base = list(range(L))
    if name == "copy_top":
        return _entries(base + base[L - b :], set(range(L, L + b)), zero)
    if name == "copy_middle":
        start = (L - b) // 2
        srcs = base[: start + b] + base[start : start + b] + base[start + b :]
        return _entries(srcs, set(range(start + b, start + 2 * b)), zero)
    if name == "copy_bottom":
        return _entries(base[:b] + base, set(range(b, 2 * b)), zero)
    if name == "interleave":
        # b evenly spaced blocks (all of them when b = L: "00112233"), each duplicated in place
        picked = sorted({round(i * (L - 1) / max(b - 1, 1)) for i in range(b)}) if b > 1 else [0]
        srcs, new = [], set()
        for i in base:
            srcs.append(i)
            if i in picked:
                new.add(len(srcs))
                srcs.append(i)
        return _entries(srcs, new, zero)
    if name == "stack":
        if b != L:
            raise ValueError(f"strategy {strategy!r} doubles the depth: needs added == base_depth ({L}), got {b}")
        return _entries(base + base, set(range(L, 2 * L)), zero)
    if name == "random_top":
        return _entries(base + [None] * b, set(range(L, L + b)), zero)
    mid = L // 2  # random_middle
    return _entries(base[:mid] + [None] * b + base[mid:], set(range(mid, mid + b)), zero)


def duplicate_plan(base_depth: int, position: int) -> list[dict[str, Any]]:
    """Adaptive stacking's candidate: block ``position`` duplicated right after itself.

    ``position = L - 1`` is copy top with b = 1.
    """
    if not 0 <= position < base_depth:
        raise ValueError(f"position {position} is not a block of a {base_depth}-block model")
    srcs = list(range(position + 1)) + list(range(position, base_depth))
    return _entries(srcs, set(), False)


def grown_depth(strategy: str, base_depth: int, added: int) -> int:
    """Blocks of the model ``strategy`` grows (``net2wider`` keeps L; scratch is L + b)."""
    if strategy == "net2wider":
        return base_depth
    if strategy == "scratch":
        return base_depth + added
    return len(depth_plan(strategy, base_depth, added))


def plan_string(plan: list[dict[str, Any]]) -> str:
    """A plan as one character per block: the source index, ``n`` new, ``z`` zeroed (e.g. ``0123zz``)."""
    return "".join("z" if e["zero"] else ("n" if e["src"] is None else str(e["src"])) for e in plan)
