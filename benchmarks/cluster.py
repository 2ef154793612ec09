"""A local multi-node Ray cluster (``ray.cluster_utils.Cluster``) for the benchmarks."""

from __future__ import annotations

from typing import Any


def start_cluster(cpus_per_node: int, nodes: int = 3) -> Any:
    """Start a head and ``nodes - 1`` workers of ``cpus_per_node`` CPUs each; wait for all."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": cpus_per_node, "include_dashboard": False},
    )
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus_per_node)
    cluster.wait_for_nodes()
    return cluster
