import pytest
import torch

from pipeline.core.errors import ParamsError
from pipeline.engine import Distributed, distributed_from_env, resolve_device
from pipeline.engine.distributed import shard


def test_device_is_chosen_automatically():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ParamsError, match="train.device = 'cuda'"):
            resolve_device("cuda")


def test_torchrun_environment_and_validation_shards(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert distributed_from_env() == Distributed() and Distributed().main and not Distributed().enabled
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed_from_env() == Distributed(rank=1, world=2, local_rank=0)
    # 301 rows over two ranks: 151 and 150, contiguous and covering every row once.
    assert shard(301, Distributed(0, 2)) == (151, 0, 151) and shard(301, Distributed(1, 2)) == (151, 151, 301)
    assert shard(301, Distributed()) == (301, 0, 301)
