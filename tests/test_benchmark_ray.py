"""The Ray executor on a local Ray instance started by the test: the same table and the same
numbers as the in-process executor, from Python and from ``mmrobust benchmark --backend ray
--address ADDR`` (a separate driver joining the instance); each dataset shipped once;
failures recorded."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

ray = pytest.importorskip(
    "ray", reason="ray is not installed (pip install 'mmrobust[ray]'); the Ray executor is untested"
)

from conftest import write_synthetic_folder  # noqa: E402
from mmrobust.experiments.benchmark import RayExecutor, load_benchmark, run_benchmark  # noqa: E402
from mmrobust.experiments.benchmark.store import STORE_COLUMNS  # noqa: E402

SETTINGS = [
    "seeds=[0, 1]",
    "finetune.epochs=2",
    "models.vbpr.params.embedding_size=16",
    "train.batch_size=256",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def config(folder):
    return load_benchmark("default", "quick", [f"datasets=[{folder}]", *SETTINGS])


@pytest.fixture(scope="module")
def local(config, tmp_path_factory):
    """The in-process run every Ray run is compared with."""
    return run_benchmark(config, tmp_path_factory.mktemp("local") / "local", progress=False)


@pytest.fixture(scope="module")
def local_ray():
    """One CPU: cells run one at a time (this machine is shared); the dashboard stays off."""
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _values(out) -> pd.DataFrame:
    frame = pd.read_parquet(out / "results.parquet")
    return frame.sort_values([c for c in STORE_COLUMNS if c != "value"]).reset_index(drop=True)


def test_ray_executor_equals_in_process(config, local, local_ray, tmp_path, monkeypatch):
    puts = []
    real_put = ray.put
    monkeypatch.setattr(
        ray, "put", lambda value, **kw: puts.append(type(value).__name__) or real_put(value, **kw)
    )
    remote = run_benchmark(config, tmp_path / "ray", RayExecutor(num_cpus=1), progress=False)
    assert remote.complete, remote.outcome.failed
    assert len(remote.outcome.computed) == len(local.grid.cells)
    assert puts == ["Dataset"]  # the data goes to the object store once, not once per task
    pd.testing.assert_frame_equal(_values(tmp_path / "ray"), _values(local.out), check_exact=True)
    for mine, theirs in zip(remote.report["tables"], local.report["tables"], strict=True):
        assert mine.markdown() == theirs.markdown()
    status = (tmp_path / "ray" / "status.json").read_text()
    assert '"backend": "ray"' in status


def test_ray_failures_are_recorded_and_dependents_skipped(config, local_ray, tmp_path):
    broken = config.model_copy(
        update={"device": "cuda:7"}
    )  # every training task fails on this CPU machine
    result = run_benchmark(
        broken, tmp_path / "broken", RayExecutor(num_cpus=1), progress=False, report=False
    )
    assert not result.complete and len(result.outcome.failed) == len(result.grid.cells)
    assert any("CUDA is not available" in msg for msg in result.outcome.failed.values())
    assert all(
        (tmp_path / "broken" / "cells" / f"{cid}.error.txt").exists()
        for cid in result.outcome.failed
    )


def test_cli_joins_a_ray_cluster_by_address(folder, local, local_ray, tmp_path):
    address = local_ray.get_runtime_context().gcs_address
    args = [
        sys.executable,
        "-m",
        "mmrobust.cli.main",
        "benchmark",
        "default",
        "--preset",
        "quick",
        "--backend",
        "ray",
        "--address",
        address,
        "--out",
        str(tmp_path / "cluster"),
        "--no-progress",
        "--set",
        f"datasets=[{folder}]",
    ] + [a for item in SETTINGS for a in ("--set", item)]
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert "on the ray backend" in text and "report:" in text and "0 failed" in text
    pd.testing.assert_frame_equal(
        _values(tmp_path / "cluster"), _values(local.out), check_exact=True
    )
