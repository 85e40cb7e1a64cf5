"""Compiling a trained scikit-learn `IsolationForest` into a `.tflite` tensor program.

Strategy: perfect tree traversal. Every tree is laid out as a perfect binary tree of the
forest's maximum depth D (heap order: children of node h are 2h+1 and 2h+2); a leaf shallower
than D is padded with dummy splits whose every descendant leaf holds the same value. Scoring a
batch is then D rounds of: gather each tree's split feature and threshold for the current node,
compare, step to a child. The leaf holds its path length (depth + c(n) for the samples it
isolated), the graph sums over trees and outputs the anomaly score 2^(-mean/c(max_samples)),
which is `-IsolationForest.score_samples` (in (0, 1], higher is more anomalous).

Parity with scikit-learn, which compares float32 inputs with float64 thresholds
(x <= t goes left): each threshold is stored as the largest float32 not above it, which gives
the same comparison for every float32 x. Inputs that are not numbers follow scikit-learn's own
rules: +inf and -inf compare like any number; NaN takes the branch the tree learned for missing
values (`missing_go_to_left`, the larger child when training saw none).

Size: T trees x 2^D x 13 bytes (feature, threshold, missing side per split; value per leaf);
100 trees of the default max_samples=256 (D=8) take about 330 KB.
"""

from __future__ import annotations

import math

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


def perfect_layout(forest) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Per tree, in heap order: split feature (input column), threshold, go-right-when-missing;
    leaf path lengths. Returns (features[T, S], thresholds[T, S], missing_right[T, S],
    leaf_values[T, 2^D], D) with S = 2^D - 1."""
    trees = forest.estimators_
    depth = max(1, max(e.tree_.max_depth for e in trees))
    splits, leaves = 2**depth - 1, 2**depth
    features = np.zeros((len(trees), splits), dtype=np.int32)
    thresholds = np.zeros((len(trees), splits), dtype=np.float64)
    missing_right = np.zeros((len(trees), splits), dtype=np.bool_)
    values = np.zeros((len(trees), leaves), dtype=np.float64)
    for t, (estimator, columns) in enumerate(zip(trees, forest.estimators_features_)):
        tree = estimator.tree_
        left_of = getattr(tree, "missing_go_to_left", None)
        stack = [(0, 0, 0)]  # (sklearn node, heap index, depth)
        while stack:
            node, heap, d = stack.pop()
            if tree.children_left[node] == -1:  # a leaf: fill every padded descendant at depth D
                value = d + float(average_path_length(int(tree.n_node_samples[node])))
                first = (heap + 1) * 2 ** (depth - d) - 1 - splits
                values[t, first : first + 2 ** (depth - d)] = value
                continue
            features[t, heap] = columns[tree.feature[node]]
            thresholds[t, heap] = tree.threshold[node]
            missing_right[t, heap] = left_of is not None and not left_of[node]
            stack.append((tree.children_left[node], 2 * heap + 1, d + 1))
            stack.append((tree.children_right[node], 2 * heap + 2, d + 1))
    return features, thresholds, missing_right, values, depth


def compile_forest(forest, *, description: str = "isolation forest") -> bytes:
    """The `.tflite` bytes of a fitted IsolationForest: input `features` (batch, n_features)
    float32, output `anomaly_score` (batch,) float32."""
    features, thresholds, missing_right, values, depth = perfect_layout(forest)
    n_trees, splits = features.shape
    leaves = splits + 1
    g = Graph()
    x = g.input("features", forest.n_features_in_)
    feat = g.const("split_feature", features.reshape(-1), np.int32)
    thr = g.const("split_threshold", float32_at_most(thresholds.reshape(-1)), np.float32)
    miss = g.const("split_missing_right", missing_right.reshape(-1), np.bool_)
    leaf = g.const("leaf_path_length", values.reshape(-1), np.float32)
    tree_base = g.const("tree_split_base", np.arange(n_trees) * splits, np.int32)
    one = g.const("one", 1, np.int32)
    two = g.const("two", 2, np.int32)
    heap = None  # (batch, trees) int32; None at the root, where every tree is at node 0
    for level in range(depth):
        name = f"level{level}"
        if heap is None:  # root: the node is known per tree, no gather by node needed
            column = g.const(f"{name}/feature", features[:, 0], np.int32)
            value = g.op("GATHER", [x, column], name=f"{name}/x", rank=2, axis=1)
            threshold = g.const(f"{name}/threshold", float32_at_most(thresholds[:, 0]), np.float32)
            missing = g.const(f"{name}/missing_right", missing_right[:, 0], np.bool_)
        else:
            node = g.op("ADD", [heap, tree_base], name=f"{name}/node", rank=2, dtype=np.int32)
            column = g.op("GATHER", [feat, node], name=f"{name}/feature", rank=2, dtype=np.int32, axis=0)
            value = g.op("GATHER", [x, column], name=f"{name}/x", rank=2, axis=1, batchDims=1)
            threshold = g.op("GATHER", [thr, node], name=f"{name}/threshold", rank=2, axis=0)
            missing = g.op("GATHER", [miss, node], name=f"{name}/missing_right", rank=2, dtype=np.bool_, axis=0)
        above = g.op("GREATER", [value, threshold], name=f"{name}/above", rank=2, dtype=np.bool_)
        is_nan = g.op("NOT_EQUAL", [value, value], name=f"{name}/is_nan", rank=2, dtype=np.bool_)
        nan_right = g.op("LOGICAL_AND", [is_nan, missing], name=f"{name}/nan_right", rank=2, dtype=np.bool_)
        right = g.op("LOGICAL_OR", [above, nan_right], name=f"{name}/right", rank=2, dtype=np.bool_)
        step = g.op("CAST", [right], name=f"{name}/step", rank=2, dtype=np.int32)
        step = g.op("ADD", [step, one], name=f"{name}/child_offset", rank=2, dtype=np.int32)
        if heap is None:
            heap = step
        else:
            doubled = g.op("MUL", [heap, two], name=f"{name}/doubled", rank=2, dtype=np.int32)
            heap = g.op("ADD", [doubled, step], name=f"{name}/child", rank=2, dtype=np.int32)
    assert heap is not None
    leaf_base = g.const("tree_leaf_base", np.arange(n_trees) * leaves - splits, np.int32)
    leaf_index = g.op("ADD", [heap, leaf_base], name="leaf", rank=2, dtype=np.int32)
    path = g.op("GATHER", [leaf, leaf_index], name="path_length", rank=2, axis=0)
    axis = g.const("tree_axis", [1], np.int32)
    total = g.op("SUM", [path, axis], name="path_length_sum", rank=1, keepDims=False)
    c = float(average_path_length(forest.max_samples_))
    scale = g.const("exponent_scale", -math.log(2.0) / (n_trees * c), np.float32)
    exponent = g.op("MUL", [total, scale], name="exponent", rank=1)
    score = g.op("EXP", [exponent], name="anomaly_score", rank=1)
    return g.finish([score], description)
