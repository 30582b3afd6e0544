"""The test cluster itself: three nodes, Citus on each, the workers registered with the coordinator."""

from __future__ import annotations

from tests import citus_cluster
from usagemeter import db


def test_coordinator_and_two_workers_run_citus(citus: citus_cluster.CitusCluster, coordinator_url: str) -> None:
    with db.connect(coordinator_url, autocommit=True) as conn:
        nodes = conn.execute(
            "select nodeport, groupid, isactive from pg_dist_node where noderole = 'primary' order by groupid"
        ).fetchall()
        answers = conn.execute(
            "select success, result from run_command_on_workers('select citus_version()') order by nodeport"
        ).fetchall()
    assert [port for port, _, _ in nodes] == [node.port for node in citus.nodes]
    assert [group for _, group, _ in nodes] == [0, 1, 2]  # group 0 is the coordinator
    assert all(active for _, _, active in nodes)
    assert len(answers) == 2
    assert all(ok and result.startswith("Citus ") for ok, result in answers)


def test_a_new_database_gets_the_extension_and_the_workers(citus: citus_cluster.CitusCluster) -> None:
    url = citus.create_database("um_citus_new")
    try:
        with db.connect(url, autocommit=True) as conn:
            conn.execute("create table probe (owner uuid not null, n int)")
            conn.execute("select create_distributed_table('probe', 'owner')")
            placed = conn.execute(
                "select count(distinct nodeport) from pg_dist_shard_placement p"
                " join pg_dist_shard s using (shardid) where s.logicalrelid = 'probe'::regclass"
            ).fetchone()
        assert placed == (2,)
    finally:
        citus.drop_database("um_citus_new")
