"""How `mlops ingest` names the files it uploads to the API: relative to their common
folder, so that a ticker taken from a file name is unchanged and two files of one name in
two folders stay two files."""

from __future__ import annotations

from pathlib import Path

from mlops.cli.ingest_client import upload_names


def test_files_of_one_folder_keep_their_names(tmp_path: Path) -> None:
    files = [tmp_path / "AAPL.csv", tmp_path / "MSFT.csv"]
    assert upload_names(files) == ["AAPL.csv", "MSFT.csv"]


def test_files_of_several_folders_keep_the_folders_below_the_common_one(tmp_path: Path) -> None:
    files = [tmp_path / "a" / "x" / "AAPL.csv", tmp_path / "b" / "AAPL.csv"]
    assert upload_names(files) == ["a/x/AAPL.csv", "b/AAPL.csv"]


def test_a_linked_file_is_uploaded_under_the_name_of_the_link(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "0042.csv").write_text("x")
    (tmp_path / "bars").mkdir()
    (tmp_path / "bars" / "AAPL.csv").symlink_to(tmp_path / "raw" / "0042.csv")
    assert upload_names([tmp_path / "bars" / "AAPL.csv"]) == ["AAPL.csv"]
