"""The Ray driver attached to an existing two-node cluster on this machine (``--ray-address``)."""

from __future__ import annotations

import os

import pytest

import hpo
from conftest import child_runs, digits_space


@pytest.fixture(scope="module")
def two_node_cluster():
    """A head node and a second node, one CPU each, all on loopback.

    Ray's own multi-node test cluster; ``ray start --address`` would make the second node join
    over the machine's network address, which the tests must not use.
    """
    import ray
    from ray._raylet import Config
    from ray.cluster_utils import Cluster

    from hpo.drivers.ray._cluster import enable_token_auth

    ray.shutdown()  # a local instance of another module must not be reused
    # With token authentication, as `ray start --head` starts a cluster by default (Ray 2.60) and
    # as hpo reaches a named cluster where a token is at hand.
    before = os.environ.get("RAY_AUTH_MODE")
    enable_token_auth()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster.address
    ray.shutdown()
    cluster.shutdown()
    os.environ.pop("RAY_AUTH_MODE")
    if before is not None:
        os.environ["RAY_AUTH_MODE"] = before
    Config.initialize("")  # the other modules' local instances: Ray's settings as they were


def test_trials_are_placed_on_both_nodes(two_node_cluster, stores, unique, tmp_path):
    space = digits_space(epochs=3, lr={"type": "float", "low": 1e-4, "high": 0.05, "log": True, "grid_points": 4})
    result = hpo.search("digits_mlp", space, driver=hpo.RayOptions(address=two_node_cluster, cpus_per_trial=1),
                        strategy="grid", n_trials=4, population=1, experiment=unique, study_name=unique,
                        home=tmp_path, evaluate_test=False, **stores)
    assert [t.state.value for t in result.trials] == ["complete"] * 4
    nodes = {t.node for t in result.trials}
    assert len(nodes) == 2  # one CPU a node, one CPU a trial: both nodes take trials
    runs = child_runs(stores["tracking_uri"], result.parent_run_id)
    assert {r.data.tags["hpo.node"] for r in runs} == nodes
