"""The version policy is a pure function: versions on disk -> versions to serve."""

from __future__ import annotations

import pytest

from modelserve.config.model_config import VersionPolicy
from modelserve.errors import InvalidArgument


@pytest.mark.parametrize(
    ("policy", "on_disk", "expected"),
    [
        (VersionPolicy(), {1, 2, 3}, (3,)),
        (VersionPolicy(), set(), ()),
        (VersionPolicy(kind="latest", num_versions=2), {1, 5, 3}, (3, 5)),
        (VersionPolicy(kind="latest", num_versions=5), {7}, (7,)),
        (VersionPolicy(kind="all"), {10, 2, 1}, (1, 2, 10)),
        (VersionPolicy(kind="specific", versions=(42, 43)), {41, 42, 43, 44}, (42, 43)),
        (VersionPolicy(kind="specific", versions=(42, 99)), {41, 42}, (42,)),
        (VersionPolicy(kind="specific", versions=(99,)), {1}, ()),
    ],
)
def test_select(policy: VersionPolicy, on_disk: set[int], expected: tuple[int, ...]) -> None:
    assert policy.select(on_disk) == expected


def test_invalid_policies_name_the_key() -> None:
    with pytest.raises(InvalidArgument, match="num_versions must be >= 1"):
        VersionPolicy(kind="latest", num_versions=0)
    with pytest.raises(InvalidArgument, match=r"specific\.versions"):
        VersionPolicy(kind="specific", versions=())
