"""The executor setting: config, the local executor, and a clear error where Ray is missing (no Ray needed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from equal import Config
from equal.config import ConfigError, result_fields_changed


def test_executor_config_is_validated_and_does_not_change_results():
    assert Config().executor == "local"
    with pytest.raises(ConfigError, match="executor"):
        Config().replace(executor="spark")
    with pytest.raises(ConfigError, match="ray.threads"):
        Config().replace(**{"ray.threads": 0})
    ray_cfg = Config().replace(executor="ray", **{"ray.address": "auto", "ray.threads": 2})
    # a run started with one executor resumes with the other: their results are the same
    assert result_fields_changed(Config().to_dict(), ray_cfg.to_dict()) == []


def test_missing_ray_is_a_clear_error(monkeypatch):
    from equal.executors import ExecutorError, make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ExecutorError, match=r"pip install 'equal\[ray\]'"):
        make_executor(Config().replace(executor="ray"))
    assert make_executor(Config()).name == "local"


def test_local_executor_assign_is_the_chunked_search(tmp_path):
    from equal.cluster import assign
    from equal.executors import LocalExecutor

    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 8)).astype(np.float32)
    c = rng.standard_normal((3, 8)).astype(np.float32)
    labels, inertia = LocalExecutor().assign(x, c, 64)
    brute = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    assert labels.tolist() == brute.argmin(1).tolist()
    assert inertia == pytest.approx(float(brute.min(1).sum()), rel=1e-4)
    assert assign(x, c, 64)[0].tobytes() == labels.tobytes()


def test_cause_of_finds_a_wrapped_worker_error():
    from equal.executors import cause_of
    from equal.extract.base import EndpointDown

    try:
        try:
            raise EndpointDown("endpoint down for 60 s")
        except EndpointDown as inner:
            raise RuntimeError("task failed") from inner
    except RuntimeError as outer:
        assert str(cause_of(outer, EndpointDown)) == "endpoint down for 60 s"
        assert cause_of(outer, KeyError) is None
