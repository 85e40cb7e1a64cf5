"""The batch decoder's own checks, against references that are slow but plainly right."""

import json

from hypothesis import given
from hypothesis import strategies as st

from cloud_sync.records import _depth_within


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


# strings full of what the counter must not mistake for structure
tricky = st.text(alphabet='[]{}"\\ab', max_size=8)
values = st.recursive(
    st.none() | st.integers() | tricky,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky, inner, max_size=3),
    max_leaves=30,
)


@given(values, st.integers(0, 8), st.booleans())
def test_the_vectorised_depth_count_agrees_with_the_parsed_depth(value, limit, spaced):
    text = json.dumps(value, indent=1 if spaced else None).encode()
    assert _depth_within(text, limit) == (depth(value) <= limit)
