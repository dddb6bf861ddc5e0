import os

import torch

# The Triton interpreter must be on before any @triton.jit function is defined, so before the
# package is imported. On a machine with a GPU the kernels run for real.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def device():
    return DEVICE
