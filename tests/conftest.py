import os

import matplotlib

matplotlib.use("Agg")
os.environ.setdefault("METALEARN_BUDGET", "quick")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _float_default():
    torch.set_default_dtype(torch.float32)
    yield
