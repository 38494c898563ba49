"""Labels and A/B splits: weighted choice, fallback order, sticky keys, and TF Serving's label rule."""

from __future__ import annotations

import collections
import random

import pytest

from modelserve.config.model_config import ModelConfig, TrafficSplit
from modelserve.core.routing import Routes, WeightedVersions, check_routes
from modelserve.errors import InvalidArgument

SPLIT = TrafficSplit(label="ab", weights=((1, 90), (2, 10)))


def test_weighted_choice_follows_the_weights() -> None:
    random.seed(7)
    split = WeightedVersions.of(SPLIT)
    picks = collections.Counter(split.candidates()[0] for _ in range(20_000))
    assert 0.88 < picks[1] / 20_000 < 0.92
    assert 0.08 < picks[2] / 20_000 < 0.12


def test_fallback_order_is_the_pick_then_the_heaviest() -> None:
    split = WeightedVersions.of(TrafficSplit(label="", weights=((1, 10), (2, 60), (3, 30))))
    for _ in range(100):
        first, *rest = split.candidates()
        assert sorted([first, *rest]) == [1, 2, 3]
        assert rest == [v for v in (2, 3, 1) if v != first]


def test_routing_key_is_sticky_and_spreads() -> None:
    split = WeightedVersions.of(TrafficSplit(label="", weights=((1, 50), (2, 50))))
    assert all(split.candidates("user-42")[0] == split.candidates("user-42")[0] for _ in range(10))
    chosen = collections.Counter(split.candidates(f"user-{i}")[0] for i in range(2000))
    assert 800 < chosen[1] < 1200


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ((), "at least one version"),
        (((1, 0),), "weights must be > 0"),
        (((1, 5), (1, 5)), "listed twice"),
        (((-1, 5),), "negative"),
    ],
)
def test_invalid_splits_are_refused(weights: tuple[tuple[int, int], ...], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        TrafficSplit(label="ab", weights=weights)


def test_a_label_cannot_be_both_a_version_label_and_a_split() -> None:
    with pytest.raises(InvalidArgument, match="both a version label and a traffic split"):
        ModelConfig(name="m", base_path="/m", version_labels={"ab": 1}, traffic_splits={"ab": SPLIT})


def routes(labels: dict[str, int] | None = None, *splits: TrafficSplit) -> Routes:
    config = ModelConfig(
        name="m", base_path="/m", version_labels=labels or {}, traffic_splits={s.label: s for s in splits}
    )
    return Routes.of(config)


def test_labels_must_point_at_available_versions() -> None:
    errors = check_routes(
        "m", routes({"stable": 3}), Routes(), {1, 2}, allow_unavailable_for_new_labels=False
    )
    assert errors == [
        "Request to assign label to version 3 of model m, which is not currently available for inference"
    ]
    assert (
        check_routes("m", routes({"stable": 2}), Routes(), {1, 2}, allow_unavailable_for_new_labels=False)
        == []
    )


def test_the_flag_allows_new_labels_only() -> None:
    old = routes({"stable": 1})
    new = routes({"stable": 3, "canary": 4})
    errors = check_routes("m", new, old, {1}, allow_unavailable_for_new_labels=True)
    assert errors == [
        "Request to assign label to version 3 of model m, which is not currently available for inference"
    ]


def test_unchanged_routes_are_kept_even_if_their_version_went_away() -> None:
    old = routes({"stable": 1}, SPLIT)
    assert check_routes("m", old, old, set(), allow_unavailable_for_new_labels=False) == []


def test_every_version_of_a_split_must_be_available() -> None:
    errors = check_routes("m", routes({}, SPLIT), Routes(), {1}, allow_unavailable_for_new_labels=False)
    assert len(errors) == 1 and "version 2 of model m" in errors[0]


def test_routes_answer_which_versions_a_label_uses() -> None:
    table = routes({"stable": 1}, SPLIT, TrafficSplit(label="", weights=((2, 1),)))
    assert table.versions_of("stable") == (1,)
    assert table.versions_of("ab") == (1, 2)
    assert table.versions_of("nope") is None
    assert table.names() == {"stable", "ab"}
