"""docs/library.md: every ```python block runs as-is (fresh namespace, seed 0, one thread)."""

from __future__ import annotations

import re
import traceback
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "library.md"

_FENCE = re.compile(r"^```[^\n]*\n.*?^```[ \t]*$", re.DOTALL | re.MULTILINE)
_PYTHON = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*$", re.MULTILINE)


def _blocks() -> list[tuple[str, str]]:
    """``(heading, code)`` of every python block, the heading the nearest one above it."""
    text = PAGE.read_text()
    # Headings outside code: a comment line in a block is not a heading.
    prose = _FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    headings = [(m.start(), m.group(1)) for m in _HEADING.finditer(prose)]
    out = []
    for m in _PYTHON.finditer(text):
        above = [title for pos, title in headings if pos < m.start()]
        out.append((above[-1] if above else "top", m.group(1)))
    return out


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40]


BLOCKS = _blocks()


def test_page_has_enough_examples():
    assert len(BLOCKS) >= 6, f"{PAGE} has {len(BLOCKS)} python blocks"


@pytest.mark.parametrize(
    "index", range(len(BLOCKS)), ids=[f"{i}-{_slug(h)}" for i, (h, _) in enumerate(BLOCKS)]
)
def test_block_runs(index):
    heading, code = BLOCKS[index]
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        exec(compile(code, f"{PAGE.name}[block {index}]", "exec"), {"__name__": "__docs__"})
    except Exception:
        pytest.fail(
            f"block {index} under {heading!r} failed:\n\n{code}\n{traceback.format_exc()}",
            pytrace=False,
        )
    finally:
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
