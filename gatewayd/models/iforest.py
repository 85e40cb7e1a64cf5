"""Compiling a trained scikit-learn `IsolationForest` into a `.tflite` tensor program.

Strategy: lock-step traversal of the trees as they are. Every node of every tree sits in one
flat table (split feature, threshold, go-right-when-missing, index of its left child, leaf
value); the two children of a split are neighbours, so a step is `left[node] + went_right`. A
leaf points to itself with an infinite threshold, so once there a tree stays. Scoring a batch
is D rounds (D the forest's depth) of: gather each tree's split feature and threshold for its
current node, compare, step. The leaf value is its path length (depth + c(n) for the samples
it isolated); the graph sums over trees and outputs the anomaly score 2^(-mean/c(max_samples)),
which is `-IsolationForest.score_samples` (in (0, 1], higher is more anomalous).

Parity with scikit-learn, which compares float32 inputs with float64 thresholds
(x <= t goes left): each threshold is stored as the largest float32 not above it, which gives
the same comparison for every float32 x. Inputs that are not numbers follow scikit-learn's own
rules: +inf and -inf compare like any number; NaN takes the branch the tree learned for missing
values (`missing_go_to_left`, the larger child when training saw none).

Size: 17 bytes per node. Trees of max_samples=256 (depth 8) hold about 130 nodes, not the 511 of
a full tree of that depth, so 100 trees take about 220 KB (a full-tree layout took 340 KB), and
that is memory the gateway holds for every device's model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .graph import Graph

EULER_GAMMA = 0.5772156649015329


def average_path_length(n: np.ndarray | int) -> np.ndarray:
    """c(n): the average path length of an unsuccessful search in a binary search tree of n
    points, as scikit-learn defines it (c(1) = 0, c(2) = 1)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    two = n == 2
    many = n > 2
    out[two] = 1.0
    out[many] = 2.0 * (np.log(n[many] - 1.0) + EULER_GAMMA) - 2.0 * (n[many] - 1.0) / n[many]
    return out


def float32_at_most(t: np.ndarray) -> np.ndarray:
    """The largest float32 not above each float64 value."""
    t32 = t.astype(np.float32)
    above = t32.astype(np.float64) > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


@dataclass(frozen=True)
class NodeTable:
    """Every node of every tree, children of a split side by side (see the module doc)."""

    feature: np.ndarray  # int32 input column (0 at a leaf)
    threshold: np.ndarray  # float64; +inf at a leaf, so a leaf never steps right
    missing_right: np.ndarray  # bool
    left: np.ndarray  # int32 index of the left child; a leaf's own index
    value: np.ndarray  # float64 path length at a leaf, 0 at a split
    roots: np.ndarray  # int32 index of each tree's root
    depth: int


def node_table(forest) -> NodeTable:
    nodes = sum(e.tree_.node_count for e in forest.estimators_)
    feature = np.zeros(nodes, dtype=np.int32)
    threshold = np.full(nodes, np.inf)
    missing_right = np.zeros(nodes, dtype=np.bool_)
    left = np.zeros(nodes, dtype=np.int32)
    value = np.zeros(nodes)
    roots = np.zeros(len(forest.estimators_), dtype=np.int32)
    free = 0  # next unused slot
    for t, (estimator, columns) in enumerate(zip(forest.estimators_, forest.estimators_features_)):
        tree = estimator.tree_
        left_of = getattr(tree, "missing_go_to_left", None)
        roots[t], free = free, free + 1
        queue = [(0, int(roots[t]), 0)]  # (sklearn node, slot, depth), breadth first
        for node, slot, d in queue:
            if tree.children_left[node] == -1:
                left[slot] = slot
                value[slot] = d + float(average_path_length(int(tree.n_node_samples[node])))
                continue
            feature[slot] = columns[tree.feature[node]]
            threshold[slot] = tree.threshold[node]
            missing_right[slot] = left_of is not None and not left_of[node]
            left[slot], free = free, free + 2
            queue.append((tree.children_left[node], free - 2, d + 1))
            queue.append((tree.children_right[node], free - 1, d + 1))
    assert free == nodes
    depth = max(1, max(e.tree_.max_depth for e in forest.estimators_))
    return NodeTable(feature, threshold, missing_right, left, value, roots, depth)


def compile_forest(forest, *, description: str = "isolation forest") -> bytes:
    """The `.tflite` bytes of a fitted IsolationForest: input `features` (batch, n_features)
    float32, output `anomaly_score` (batch,) float32."""
    table = node_table(forest)
    n_trees = len(table.roots)
    g = Graph()
    x = g.input("features", forest.n_features_in_)
    feat = g.const("node_feature", table.feature, np.int32)
    thr = g.const("node_threshold", float32_at_most(table.threshold), np.float32)
    miss = g.const("node_missing_right", table.missing_right, np.bool_)
    left = g.const("node_left_child", table.left, np.int32)
    leaf = g.const("leaf_path_length", table.value, np.float32)
    node = None  # (batch, trees) int32; None at the root, where every tree's node is known
    for level in range(table.depth):
        name = f"level{level}"
        if node is None:  # root: constants per tree, no gather by node needed
            column = g.const(f"{name}/feature", table.feature[table.roots], np.int32)
            value = g.op("GATHER", [x, column], name=f"{name}/x", rank=2, axis=1)
            threshold = g.const(f"{name}/threshold", float32_at_most(table.threshold[table.roots]), np.float32)
            missing = g.const(f"{name}/missing_right", table.missing_right[table.roots], np.bool_)
            child = g.const(f"{name}/left_child", table.left[table.roots], np.int32)
        else:
            column = g.op("GATHER", [feat, node], name=f"{name}/feature", rank=2, dtype=np.int32, axis=0)
            value = g.op("GATHER", [x, column], name=f"{name}/x", rank=2, axis=1, batchDims=1)
            threshold = g.op("GATHER", [thr, node], name=f"{name}/threshold", rank=2, axis=0)
            missing = g.op("GATHER", [miss, node], name=f"{name}/missing_right", rank=2, dtype=np.bool_, axis=0)
            child = g.op("GATHER", [left, node], name=f"{name}/left_child", rank=2, dtype=np.int32, axis=0)
        above = g.op("GREATER", [value, threshold], name=f"{name}/above", rank=2, dtype=np.bool_)
        is_nan = g.op("NOT_EQUAL", [value, value], name=f"{name}/is_nan", rank=2, dtype=np.bool_)
        nan_right = g.op("LOGICAL_AND", [is_nan, missing], name=f"{name}/nan_right", rank=2, dtype=np.bool_)
        right = g.op("LOGICAL_OR", [above, nan_right], name=f"{name}/right", rank=2, dtype=np.bool_)
        step = g.op("CAST", [right], name=f"{name}/step", rank=2, dtype=np.int32)
        node = g.op("ADD", [child, step], name=f"{name}/node", rank=2, dtype=np.int32)
    assert node is not None
    path = g.op("GATHER", [leaf, node], name="path_length", rank=2, axis=0)
    axis = g.const("tree_axis", [1], np.int32)
    total = g.op("SUM", [path, axis], name="path_length_sum", rank=1, keepDims=False)
    c = float(average_path_length(forest.max_samples_))
    scale = g.const("exponent_scale", -math.log(2.0) / (n_trees * c), np.float32)
    exponent = g.op("MUL", [total, scale], name="exponent", rank=1)
    score = g.op("EXP", [exponent], name="anomaly_score", rank=1)
    return g.finish([score], description)
