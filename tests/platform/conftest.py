"""Ray is started once per test session (not per test) for the platform tests.

The session's Ray is a real multi-node cluster on this machine (``ray.cluster_utils.Cluster``):
a head node with 2 CPUs and two worker nodes with 2 CPUs and 2 GPUs each. The GPUs are
declared, not present (Ray allows that), so GPU placement is testable on a CPU-only machine;
trials that ask for no GPU may run on any node.
"""

from __future__ import annotations

import os
import socket

import pytest

WORKER_NODES = 2
GPUS_PER_WORKER = 2


@pytest.fixture(scope="session")
def ray_cluster():
    """The session's Ray cluster (head + 2 GPU-declaring workers), connected."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    workers = [cluster.add_node(num_cpus=2, num_gpus=GPUS_PER_WORKER) for _ in range(WORKER_NODES)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster.worker_node_ids = [w.node_id for w in workers]
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def ray_session(ray_cluster):
    """Ray, connected (the session cluster)."""
    import ray

    return ray


@pytest.fixture
def mlflow_uri(tmp_path) -> str:
    """A fresh SQLite MLflow store for one test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
