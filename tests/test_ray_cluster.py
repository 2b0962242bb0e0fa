"""The Ray driver attached to an existing two-node cluster on this machine (``--ray-address``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import hpo
from conftest import child_runs, digits_space

pytestmark = pytest.mark.xdist_group("ray_cluster")  # one two-node cluster, on one worker


@pytest.fixture(scope="module")
def two_node_cluster():
    """A head node and a second node, one CPU each, all on loopback.

    Ray's own multi-node test cluster; ``ray start --address`` would make the second node join
    over the machine's network address, which the tests must not use.
    """
    import ray
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    from ray._raylet import Config
    from ray.cluster_utils import Cluster

    from hpo.drivers.ray._cluster import enable_token_auth

    ray.shutdown()  # a local instance of another module must not be reused
    # With token authentication, as `ray start --head` starts a cluster by default (Ray 2.60) and
    # as hpo reaches a named cluster where a token is at hand.
    before = os.environ.get("RAY_AUTH_MODE")
    enable_token_auth()
    # A token, made as `ray.init()` makes one for a new local instance where none is at hand (a
    # fresh machine): Ray's test cluster does not, and its head died for want of one.
    ensure_token_if_auth_enabled(create_token_if_missing=True)
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


HOLD_EVERY_CPU = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
holders = [ray.remote(num_cpus=1)(type("Holder", (), {"ready": lambda self: True})).remote() for _ in range(2)]
ray.get([holder.ready.remote() for holder in holders])
print("held", flush=True)
time.sleep(300)
"""


def test_a_cluster_whose_cpus_other_work_holds_is_refused_in_one_line_that_says_so(two_node_cluster, stores, unique,
                                                                                   tmp_path, monkeypatch):
    import hpo.drivers.ray._driver

    other_work = subprocess.Popen([sys.executable, "-c", HOLD_EVERY_CPU, two_node_cluster], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
    try:
        assert other_work.stdout.readline().strip() == "held"
        monkeypatch.setattr(hpo.drivers.ray._driver, "PLACED_WITHIN_S", 3.0)
        with pytest.raises(hpo.HpoError) as refused:
            hpo.search("digits_mlp", digits_space(epochs=1), driver=hpo.RayOptions(address=two_node_cluster),
                       strategy="random", n_trials=2, population=1, experiment=unique, study_name=unique,
                       home=tmp_path, evaluate_test=False, **stores)
    finally:
        other_work.kill()
        other_work.wait()
    assert refused.value.message == ("the Ray cluster placed no trial's actor within 3 s (free: 0 of 2 CPUs; a trial "
                                     "asks for 1 CPU): other work holds what a trial asks for")
    assert refused.value.argument == "address"
