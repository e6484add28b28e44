"""Every bad input of the MMRec layout fails with one clear sentence naming the problem."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import good_rows, write_folder
from mmrobust.data import DataError, import_dataset, list_datasets, load_dataset, load_mmrec


def one_sentence(message: str) -> bool:
    return "\n" not in message and len(message) < 400


def expect_error(folder, pattern: str) -> str:
    with pytest.raises(DataError) as info:
        load_mmrec(folder)
    message = str(info.value)
    assert re.search(pattern, message), message
    assert one_sentence(message)
    return message


def test_good_folder_loads(good_folder):
    ds = load_mmrec(good_folder)
    assert (ds.n_users, ds.n_items) == (4, 6)
    assert ds.modalities == ("image", "text")
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (12, 4, 4)
    assert ds.features["image"].dtype == np.float32
    summary = ds.summary()
    assert summary["modalities"] == {"image": 5, "text": 3}
    assert summary["interactions"] == 20


def test_missing_folder(tmp_path):
    expect_error(tmp_path / "nope", r"nope does not exist")


def test_missing_inter_file(tmp_path):
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path / "empty", r"has no \.inter interaction file")


def test_wrong_header(tmp_path):
    folder = write_folder(tmp_path / "d", good_rows(),
                          header="user\titem\trating\ttimestamp\tlabel")
    expect_error(folder,
                 r"needs tab-separated columns userID itemID rating timestamp x_label "
                 r"\(missing userID, itemID, x_label\)")


def test_comma_separated_file_is_a_wrong_header(tmp_path):
    folder = write_folder(tmp_path / "d", [], header="userID,itemID,rating,timestamp,x_label")
    expect_error(folder, r"missing userID")


@pytest.mark.parametrize("bad,column", [("abc", "userID"), ("1.5", "itemID"), ("", "userID")])
def test_non_integer_ids(tmp_path, bad, column):
    rows = good_rows()
    row = list(rows[2])
    row[0 if column == "userID" else 1] = bad
    rows[2] = tuple(row)
    expect_error(write_folder(tmp_path / "d", rows),
                 rf"line 4: {column} '{re.escape(bad)}' is not an integer")


def test_negative_ids(tmp_path):
    rows = good_rows()
    rows[5] = (-1,) + rows[5][1:]
    expect_error(write_folder(tmp_path / "d", rows), r"line 7: userID -1 is negative")


def test_item_id_past_item_count(tmp_path):
    rows = good_rows() + [(0, 9, 1, 1, 0)]
    folder = write_folder(tmp_path / "d", rows, {"image": np.zeros((6, 2), np.float32)})
    expect_error(folder, r"itemID 9 is past the item count 6")


def test_x_label_outside_range(tmp_path):
    rows = good_rows()
    rows[0] = rows[0][:4] + (3,)
    expect_error(write_folder(tmp_path / "d", rows), r"line 2: x_label 3 is not 0, 1 or 2")


def test_empty_train_split(tmp_path):
    rows = [r[:4] + (1,) for r in good_rows()]
    expect_error(write_folder(tmp_path / "d", rows), r"empty train split")


def test_feature_row_count_mismatch(tmp_path):
    folder = write_folder(tmp_path / "d", good_rows(), {"image": np.zeros((6, 2), np.float32),
                                                         "text": np.zeros((7, 2), np.float32)})
    expect_error(folder, r"text_feat\.npy has 7 rows but image_feat\.npy has 6")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_and_inf_features(tmp_path, value):
    x = np.ones((6, 3), np.float32)
    x[4, 1] = value
    folder = write_folder(tmp_path / "d", good_rows(), {"image": x})
    expect_error(folder, r"image_feat\.npy contains 1 NaN/inf values \(first in row 4\)")


def test_non_2d_features(tmp_path):
    folder = write_folder(tmp_path / "d", good_rows(), {"image": np.ones(6, np.float32)})
    expect_error(folder, r"image_feat\.npy must be 2-D .* shape \(6,\)")


def test_non_numeric_features(tmp_path):
    folder = write_folder(tmp_path / "d", good_rows(), {"image": np.array([["a"] * 2] * 6)})
    expect_error(folder, r"image_feat\.npy is not numeric")


def test_pickled_object_features_are_never_loaded(tmp_path):
    folder = write_folder(tmp_path / "d", good_rows(),
                          {"image": np.array([{"x": 1}] * 6, dtype=object)})
    expect_error(folder, r"holds Python objects \(a pickle\), which are never loaded")


def test_corrupt_npy(tmp_path):
    folder = write_folder(tmp_path / "d", good_rows())
    (folder / "image_feat.npy").write_bytes(b"not an npy file")
    expect_error(folder, r"image_feat\.npy is not a readable \.npy file")


def test_duplicates_warn_and_drop_keeping_train(tmp_path):
    rows = good_rows() + [(0, 0, 1, 500, 2), (0, 1, 1, 501, 0)]
    with pytest.warns(UserWarning, match=r"dropped 2 duplicate \(user, item\) interactions"):
        ds = load_mmrec(write_folder(tmp_path / "d", rows))
    assert ds.train.nnz == 12 and ds.test.nnz == 4
    assert ds.train[0, 0] == 1 and ds.test[0, 0] == 0


def test_cold_users_dropped_from_valid_and_test(tmp_path):
    rows = good_rows() + [(4, 0, 1, 1, 1), (4, 1, 1, 1, 2)]
    ds = load_mmrec(write_folder(tmp_path / "d", rows))
    assert ds.n_users == 5
    assert ds.valid[4].nnz == 0 and ds.test[4].nnz == 0
    assert ds.valid.nnz == 4 and ds.test.nnz == 4


def test_unknown_dataset_name(isolated_home):
    with pytest.raises(DataError) as info:
        load_dataset("no-such-dataset")
    message = str(info.value)
    assert message.startswith("unknown dataset 'no-such-dataset'; known datasets:")
    assert "ml100k-meta" in message and one_sentence(message)


def test_import_registers_only_valid_folders(good_folder, tmp_path, isolated_home):
    bad = write_folder(tmp_path / "bad", good_rows(),
                       {"image": np.full((6, 2), np.nan, np.float32)})
    with pytest.raises(DataError, match="NaN"):
        import_dataset(bad, "bad")
    assert not (isolated_home / "registry.json").exists()
    entry = import_dataset(good_folder, "mine")
    assert entry.name == "mine"
    assert {"mine"} <= {e.name for e in list_datasets()}
    assert load_dataset("mine").n_items == 6


def test_shared_datasets_are_found_by_name():
    names = {e.name for e in list_datasets()}
    assert {"tiktok", "ml100k", "baby-interactions"} <= names
