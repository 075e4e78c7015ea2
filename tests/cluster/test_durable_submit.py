"""``submit(durability="replicas:1")`` on a cluster: the submit and its WAIT go to the master of
the workflow's slot, whose replica acknowledges it; workflows of every partition pass."""

from __future__ import annotations

import stabilize_redis
from tests.integration.support import make_stage, make_workflow


def test_replicated_submits_are_acknowledged_by_the_master_of_each_workflow(
        cluster_target: tuple[str, str]) -> None:
    url, ns = cluster_target
    client = stabilize_redis.connect(url, ns)
    workflows = [make_workflow(make_stage("a")) for _ in range(24)]
    assert [client.submit(wf, durability="replicas:1") for wf in workflows] == [wf.id for wf in workflows]
    backend = client.backend
    masters = {backend.client.get_node_from_key(backend.part(wf.id).workflow(wf.id)).name for wf in workflows}
    assert len(masters) == 3  # the workflows span every master
    assert all(backend.client.exists(backend.part(wf.id).workflow(wf.id)) for wf in workflows)
