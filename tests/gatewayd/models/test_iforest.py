"""The Isolation Forest graph against scikit-learn: same scores (within 1e-5), same
predictions, on held-out data with extreme values, infinities, NaN and split boundaries."""

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from gatewayd.models.graph import operators_of
from gatewayd.models.iforest import compile_forest, float32_at_most, node_table
from gatewayd.models.runtime import TfliteModel


def datasets():
    rng = np.random.default_rng(7)
    yield "normal-6", rng.normal(size=(1500, 6)), {}
    yield "one-feature", rng.normal(size=(400, 1)), {"n_estimators": 30}
    yield "integers-with-ties", rng.integers(0, 5, size=(800, 4)).astype(float), {"max_samples": 64}
    yield "lognormal-subset-features", rng.lognormal(size=(1200, 10)), {"max_features": 0.5, "n_estimators": 60}
    yield "few-rows", rng.normal(size=(40, 3)), {"n_estimators": 20}  # max_samples = 40: depth 6
    yield "big-samples", rng.normal(size=(3000, 5)), {"max_samples": 1024, "n_estimators": 25}
    yield "bootstrap-contamination", rng.uniform(-1e3, 1e3, size=(900, 3)), {"bootstrap": True, "contamination": 0.05}


def held_out(rng, x: np.ndarray) -> np.ndarray:
    n, f = 600, x.shape[1]
    scale = x.std(axis=0) + 1
    h = x.mean(axis=0) + rng.normal(size=(n, f)) * scale * 3
    h[:20] = 1e30
    h[20:40] = -1e30
    h[40:60, 0] = np.inf
    h[60:80, -1] = -np.inf
    h[80:120, rng.integers(0, f, 40)] = np.nan
    h[120:140] = np.nan
    h[140:160] = np.finfo(np.float32).max
    return h.astype(np.float32)


@pytest.mark.parametrize("name,x,params", list(datasets()), ids=lambda v: v if isinstance(v, str) else "")
def test_scores_and_predictions_match_sklearn(name, x, params):
    rng = np.random.default_rng(1)
    forest = IsolationForest(random_state=3, **params).fit(x)
    model = TfliteModel(compile_forest(forest))
    for data in (held_out(rng, x), x.astype(np.float32)):
        expected = -forest.score_samples(data)
        got = model(data)["anomaly_score"]
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) < 1e-5
        assert np.array_equal(-got - forest.offset_ < 0, forest.predict(data) == -1)


def test_split_boundaries_take_sklearns_side():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 3))
    forest = IsolationForest(n_estimators=10, random_state=0).fit(x)
    tree = forest.estimators_[0].tree_
    rows = []
    for node in np.flatnonzero(tree.children_left != -1):
        t32 = float32_at_most(np.array([tree.threshold[node]]))[0]
        for v in (t32, np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))):
            row = x[node % len(x)].astype(np.float32)
            row[tree.feature[node]] = v
            rows.append(row)
    data = np.array(rows, dtype=np.float32)
    got = TfliteModel(compile_forest(forest))(data)["anomaly_score"]
    assert np.max(np.abs(got + forest.score_samples(data))) < 1e-5


def test_largest_float32_not_above():
    t = np.array([0.1, -0.1, 1.0, 1e-40, 3.0000001])
    t32 = float32_at_most(t)
    assert np.all(t32.astype(np.float64) <= t)
    assert np.all(np.nextafter(t32, np.float32(np.inf)).astype(np.float64) > t)


def test_single_and_batch_invocations_agree_and_graph_is_small():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 8))
    forest = IsolationForest(n_estimators=100, random_state=0).fit(x)
    data = compile_forest(forest)
    assert len(data) < 1_000_000  # 100 trees of max_samples 256
    assert set(operators_of(data)) <= {
        "GATHER",
        "GREATER",
        "NOT_EQUAL",
        "LOGICAL_AND",
        "LOGICAL_OR",
        "CAST",
        "ADD",
        "MUL",
        "SUM",
        "EXP",
    }
    model = TfliteModel(data, threads=2)
    batch = model(x[:50])["anomaly_score"]
    singles = np.concatenate([model(row)["anomaly_score"] for row in x[:50]])
    assert np.array_equal(batch, singles)


def test_node_table_holds_each_tree_as_it_is():
    x = np.random.default_rng(4).normal(size=(300, 3))
    forest = IsolationForest(n_estimators=7, random_state=0).fit(x)
    table = node_table(forest)
    assert len(table.left) == sum(e.tree_.node_count for e in forest.estimators_)  # no padding
    leaves = table.left == np.arange(len(table.left))
    assert leaves.sum() == sum(e.tree_.n_leaves for e in forest.estimators_)
    assert np.all(np.isinf(table.threshold[leaves])) and not table.missing_right[leaves].any()
    assert np.all(table.value[leaves] > 0) and np.all(table.value[~leaves] == 0)
    children = np.concatenate([table.left[~leaves], table.left[~leaves] + 1])
    assert sorted(children.tolist() + table.roots.tolist()) == list(range(len(table.left)))  # each node once


def test_a_hundred_trees_of_256_samples_stay_small():
    forest = IsolationForest(random_state=0).fit(np.random.default_rng(5).normal(size=(360, 8)))
    assert len(compile_forest(forest)) < 260_000  # a full-tree layout of the same forest: 347,000
