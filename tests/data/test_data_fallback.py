"""``load_with_fallback``: the configured dataset first, then each fallback, said out loud."""

from __future__ import annotations

import numpy as np
import pytest
from datafiles import tiny_arrays

from mnistlab.data import load_dataset, load_with_fallback, sources
from mnistlab.errors import DataError


def _recorder():
    seen = []
    return seen, lambda name, error, next_name: seen.append((name, str(error), next_name))


def test_first_dataset_that_loads_is_used_and_each_fallback_is_reported():
    seen, on_fallback = _recorder()
    ds = load_with_fallback(["no_such_data", "also_missing", "digits"], on_fallback=on_fallback)
    assert ds.name == "digits"
    np.testing.assert_array_equal(ds.y_test, load_dataset("digits").y_test)
    assert [(name, nxt) for name, _, nxt in seen] == [
        ("no_such_data", "also_missing"), ("also_missing", "digits")
    ]
    assert "unknown dataset 'no_such_data'" in seen[0][1]


def test_no_fallback_needed_calls_nothing():
    seen, on_fallback = _recorder()
    assert load_with_fallback(["digits", "no_such_data"], on_fallback=on_fallback).name == "digits"
    assert seen == []


def test_the_last_error_is_raised_when_nothing_loads():
    seen, on_fallback = _recorder()
    with pytest.raises(DataError, match="unknown dataset 'last_bad'"):
        load_with_fallback(["first_bad", "last_bad"], on_fallback=on_fallback)
    assert [(name, nxt) for name, _, nxt in seen] == [("first_bad", "last_bad")]


def test_own_data_is_never_replaced_by_a_named_dataset(tmp_path):
    seen, on_fallback = _recorder()
    with pytest.raises(DataError, match="not_there"):
        load_with_fallback(["mnist", "digits"], path=str(tmp_path / "not_there.npz"),
                           on_fallback=on_fallback)
    assert seen == []
    x_train, y_train, x_test, y_test = tiny_arrays(size=(6, 6))
    mine = tmp_path / "mine.npz"
    np.savez(mine, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    assert load_with_fallback(["digits"], path=str(mine)).name == "custom"


def test_no_names_is_a_clear_error():
    with pytest.raises(DataError, match="no dataset to load.*received none"):
        load_with_fallback([])


def test_the_offline_hint_leaves_out_what_failed_and_is_not_given_for_unknown_names():
    text = sources.here_now(["mnist", "digits"])
    assert "--dataset digits" not in text and "--dataset mnist " not in text
    for name in ("fashion_mnist", "mnist_sample"):
        assert (f"--dataset {name} " in text) == sources.availability(name)[0]
    with pytest.raises(DataError) as e:
        load_with_fallback(["no_such_data"])
    assert "here now" not in str(e.value)
