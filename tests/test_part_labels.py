"""data/part_labels.py: the body-part label file beside a dataset's registrations."""
from __future__ import annotations

import numpy as np
import pytest

from common.errors import UserError
from data.part_labels import PART_LABELS_FILE, read_part_labels, write_part_labels


def test_labels_read_back_exactly_and_absent_labels_are_none(tmp_path):
    assert read_part_labels(tmp_path) is None
    write_part_labels(tmp_path / PART_LABELS_FILE, np.array([2, 0, 1, 1], dtype=np.int32), ("a", "bb", "ccc"))
    labels, names = read_part_labels(tmp_path)
    assert labels.dtype == np.int64 and labels.tolist() == [2, 0, 1, 1] and names == ("a", "bb", "ccc")


def test_a_label_outside_the_names_is_refused_on_write_and_on_read(tmp_path):
    with pytest.raises(ValueError):
        write_part_labels(tmp_path / PART_LABELS_FILE, np.array([0, 3]), ("a", "b"))
    np.savez(tmp_path / PART_LABELS_FILE, labels=np.array([0, 3]), names=np.array(["a", "b"]))
    with pytest.raises(UserError, match="indexing the 2 strings"):
        read_part_labels(tmp_path)


def test_a_file_that_is_no_label_archive_is_a_user_error(tmp_path):
    (tmp_path / PART_LABELS_FILE).write_bytes(b"not a zip archive")
    with pytest.raises(UserError, match=PART_LABELS_FILE):
        read_part_labels(tmp_path)
    np.savez(tmp_path / PART_LABELS_FILE, labels=np.array([0, 1]))  # no names
    with pytest.raises(UserError, match="'labels' and 'names'"):
        read_part_labels(tmp_path)
