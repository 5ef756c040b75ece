import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def venv_env():
    """Environment whose PATH finds this interpreter's traindyn and snakemake first."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    return env


def snakemake(args, cwd, env, timeout=900):
    """Run snakemake on the repository's Snakefile in ``cwd``; return the CompletedProcess."""
    exe = shutil.which("snakemake", path=env["PATH"])
    cmd = [exe, "-s", str(ROOT / "Snakefile"), "--directory", str(cwd), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """sklearn's digits prepared by the data stage (256 training images), once per module."""
    from traindyn.config import load_config
    from traindyn.data import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "digits"
    prepare_dataset("digits", load_config([], ["data.max_train=256"]).data, out)
    return out


class Interrupted(Exception):
    """Raised by ``interrupt_at``: stands for a run killed mid-training, for resume tests."""


def interrupt_at(step):
    """A training callback that raises ``Interrupted`` after optimizer step ``step`` (None: never)."""
    from traindyn.train import Callback

    class _InterruptAt(Callback):
        def on_step_end(self, state, loss):
            if state.step == step:
                raise Interrupted

    return _InterruptAt()
