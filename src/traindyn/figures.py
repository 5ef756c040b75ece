"""The figure stage: a jupytext notebook, given table paths, executed by papermill."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["render_notebook"]

KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}


def render_notebook(notebook: str | Path, executed: str | Path, parameters: dict[str, Any],
                    cwd: str | Path = ".") -> Path:  # fmt: skip
    """Convert a py:percent notebook to .ipynb and execute it with papermill.

    The executed notebook is written to a temporary name and renamed only on success, so a
    failed figure leaves no executed notebook that a later stage would take as done.

    Args:
        notebook: The jupytext source, e.g. ``notebooks/data_overview.py``; it must have a
            cell tagged ``parameters``.
        executed: Where the executed ``.ipynb`` goes (``results/notebooks/...``).
        parameters: Values injected after the ``parameters`` cell (paths of input tables,
            output paths, formats).
        cwd: Working directory of the kernel (relative paths resolve against it).

    Returns:
        The path of the executed notebook.

    Raises:
        FileNotFoundError: If the notebook source is missing.
        ValueError: If it has no ``parameters`` cell.
    """
    import jupytext
    import papermill

    notebook, executed = Path(notebook), Path(executed)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook {notebook} does not exist")
    nb = jupytext.read(notebook)
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        raise ValueError(f"{notebook} has no cell tagged 'parameters' (# %% tags=[\"parameters\"])")
    # papermill needs a kernelspec, which a jupytext py:percent file does not carry.
    nb.metadata["kernelspec"] = KERNEL
    executed.parent.mkdir(parents=True, exist_ok=True)
    source = executed.with_name(f".{executed.stem}.src-{os.getpid()}.ipynb")
    partial = executed.with_name(f".{executed.stem}.run-{os.getpid()}.ipynb")
    jupytext.write(nb, source, fmt="ipynb")
    try:
        papermill.execute_notebook(str(source), str(partial), parameters=parameters,
                                   kernel_name=KERNEL["name"], cwd=str(cwd),
                                   progress_bar=False, log_output=False)  # fmt: skip
        shutil.move(partial, executed)
    finally:
        source.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return executed
