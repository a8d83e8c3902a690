"""When a primary is due for rotation, and how the usage watch wakes the job."""

from __future__ import annotations

import pytest

from vault.domain.keyops import RotationLimits, UsageWatch, rotation_due
from vault.storage.base import KeyVersionRow

CREATED = 1_800_000_000.0


def primary(encryptions: int) -> KeyVersionRow:
    return KeyVersionRow(3, "primary", b"wrapped", "kek", CREATED, encryptions)


@pytest.mark.parametrize(
    ("encryptions", "age", "limits", "due"),
    [
        (99, 9.0, RotationLimits(10.0, 100), None),
        (100, 0.0, RotationLimits(10.0, 100), "encryptions"),
        (0, 10.0, RotationLimits(10.0, 100), "age"),
        (100, 10.0, RotationLimits(10.0, 100), "encryptions"),  # either: the count names it
        (0, 1e9, RotationLimits(0.0, 100), None),  # max_age 0: no age limit
        (2**30, 0.0, RotationLimits(), "encryptions"),
        (2**30 - 1, 364 * 86400.0, RotationLimits(), None),
        (0, 365 * 86400.0, RotationLimits(), "age"),
    ],
)
def test_rotation_due(encryptions, age, limits, due):
    assert rotation_due(primary(encryptions), limits, CREATED + age) == due


def test_usage_watch_adds_local_encryptions_to_the_last_count():
    watch = UsageWatch(100)
    watch.observe(3, 90)
    watch.encrypted(3, 9)
    assert not watch.due.is_set()
    watch.encrypted(2, 50)  # another version (an old keyring): not the primary's count
    assert not watch.due.is_set()
    watch.encrypted(3, 1)
    assert watch.due.is_set()


def test_usage_watch_is_due_when_the_store_count_already_crossed():
    watch = UsageWatch(100)
    watch.observe(3, 100)
    assert watch.due.is_set()
