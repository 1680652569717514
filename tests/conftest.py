import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"
