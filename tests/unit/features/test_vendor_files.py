"""Vendor files: sources from arguments and sources.yaml, many files at once, column maps,
tickers from file names, and the errors raised before anything is read into the stores."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from mlops.errors import ConfigError, DataValidationError, InvalidInputError, NotFoundError
from mlops.features.sources import BarsSource, bars_source, load_layouts, merge_columns
from mlops.features.vendor_files import load_source
from mlops.settings import Settings

MAX_BYTES = 10_000_000
YAHOO_HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"
YAHOO_MAP = {
    "Date": "date",
    "Open": "open",
    "High": "high",
    "Low": "low",
    "Close": "close",
    "Volume": "volume",
}


def yahoo_csv(path: Path, days: int = 5, start: float = 100.0, header: str = YAHOO_HEADER) -> Path:
    """A Yahoo-style daily file: ``Adj Close`` is 1% under ``Close``."""
    lines = [header]
    for i, day in enumerate(pd.bdate_range("2024-01-02", periods=days)):
        close = start + i
        lines.append(
            f"{day:%Y-%m-%d},{close - 0.5},{close + 1},{close - 1},{close},{close * 0.99},{1000 + i}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def yahoo(paths: list[Path], **values: object) -> BarsSource:
    fields = {"columns": YAHOO_MAP, "ticker_from": "filename", **values}
    return BarsSource(paths=[str(p) for p in paths], **fields)  # type: ignore[arg-type]


@pytest.fixture
def universe(tmp_path: Path) -> Path:
    folder = tmp_path / "yahoo"
    folder.mkdir()
    for i, ticker in enumerate(["AAPL", "BRK.B", "MSFT"]):
        yahoo_csv(folder / f"{ticker}.csv", start=100.0 + 10 * i)
    (folder / "README.txt").write_text("not bars")
    return folder


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", profile="local")


# --------------------------------------------------------------------------- happy paths


def test_a_directory_of_per_ticker_files_loads_with_tickers_from_file_names(
    universe: Path,
) -> None:
    loaded = load_source(yahoo([universe]), MAX_BYTES)

    frame = loaded.frame
    assert loaded.files == 3 and loaded.ignored_columns == ["Adj Close"]
    assert list(frame.columns) == ["ticker", "date", "open", "high", "low", "close", "volume"]
    assert frame.groupby("ticker").size().to_dict() == {"AAPL": 5, "BRK.B": 5, "MSFT": 5}
    msft = frame[frame["ticker"] == "MSFT"]
    assert msft["close"].tolist() == [120.0, 121.0, 122.0, 123.0, 124.0]
    assert msft["date"].iloc[0] == pd.Timestamp("2024-01-02")
    assert frame["volume"].dtype == "int64"


def test_a_glob_and_a_mapped_adjusted_close(universe: Path) -> None:
    columns = merge_columns(YAHOO_MAP, {"Adj Close": "close"})
    loaded = load_source(yahoo([universe / "A*.csv"], columns=columns), MAX_BYTES)

    assert loaded.files == 1 and loaded.ignored_columns == ["Close"]
    assert loaded.frame["close"].tolist() == pytest.approx([c * 0.99 for c in range(100, 105)])


def test_one_file_with_a_given_ticker_and_gzip(tmp_path: Path) -> None:
    plain = yahoo_csv(tmp_path / "download.csv")
    packed = tmp_path / "download.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))

    for path in (plain, packed):
        loaded = load_source(yahoo([path], ticker="IBM", ticker_from="column"), MAX_BYTES)
        assert set(loaded.frame["ticker"]) == {"IBM"} and len(loaded.frame) == 5


def test_many_gzip_files_read_at_once(universe: Path, tmp_path: Path) -> None:
    packed = tmp_path / "packed"
    packed.mkdir()
    for path in universe.glob("*.csv"):
        (packed / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    assert load_source(yahoo([packed]), MAX_BYTES).frame.equals(
        load_source(yahoo([universe]), MAX_BYTES).frame
    )


def test_a_ticker_pattern_takes_part_of_the_file_name(tmp_path: Path) -> None:
    for ticker in ("AAPL", "MSFT"):
        yahoo_csv(tmp_path / f"us_{ticker}_1d.csv")
    source = yahoo([tmp_path], ticker_pattern=r"us_(?P<ticker>[A-Z.]+)_1d")

    assert sorted(load_source(source, MAX_BYTES).frame["ticker"].unique()) == ["AAPL", "MSFT"]


def test_files_with_blank_lines_and_crlf_count_their_rows_exactly(tmp_path: Path) -> None:
    """Rows of a file with blank lines cannot be counted from its line ends; the batch is
    then read file by file so each row still gets its own file's ticker."""
    yahoo_csv(tmp_path / "AAA.csv", days=3)
    text = yahoo_csv(tmp_path / "BBB.csv", days=4, start=200).read_text()
    (tmp_path / "BBB.csv").write_bytes(
        text.replace("\n", "\r\n", 2).replace("\n", "\n\n", 3).encode()
    )
    yahoo_csv(tmp_path / "CCC.csv", days=2, start=300)

    frame = load_source(yahoo([tmp_path]), MAX_BYTES).frame

    assert frame.groupby("ticker").size().to_dict() == {"AAA": 3, "BBB": 4, "CCC": 2}
    assert frame.loc[frame["ticker"] == "BBB", "close"].tolist() == [200.0, 201.0, 202.0, 203.0]


def test_a_text_value_in_one_file_of_many_reaches_validation_as_text(tmp_path: Path) -> None:
    yahoo_csv(tmp_path / "AAA.csv")
    bad = yahoo_csv(tmp_path / "BBB.csv")
    bad.write_text(bad.read_text().replace(",1002\n", ",n/a-ish\n"))

    frame = load_source(yahoo([tmp_path]), MAX_BYTES).frame

    assert "n/a-ish" in frame["volume"].tolist() and len(frame) == 10


def test_parquet_files_per_ticker(tmp_path: Path) -> None:
    for ticker in ("AAA", "BBB"):
        frame = pd.read_csv(yahoo_csv(tmp_path / f"{ticker}.csv"), parse_dates=["Date"])
        frame.to_parquet(tmp_path / f"{ticker}.parquet", index=False)
        (tmp_path / f"{ticker}.csv").unlink()

    loaded = load_source(yahoo([tmp_path]), MAX_BYTES)

    assert loaded.files == 2 and loaded.ignored_columns == ["Adj Close"]
    assert loaded.frame["ticker"].tolist() == ["AAA"] * 5 + ["BBB"] * 5


def test_a_plain_file_keeps_its_behaviour_and_ignores_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text(
        "ticker,timestamp,open,high,low,close,volume,vwap\nAAA,2024-01-02,1,2,0.5,1.5,10,1.2\n"
    )
    loaded = load_source(BarsSource(paths=[str(path)]), MAX_BYTES)
    assert loaded.ignored_columns == ["vwap"]
    assert loaded.frame["date"].tolist() == [pd.Timestamp("2024-01-02")]


# --------------------------------------------------------------------------- sources


def test_the_shipped_yahoo_layout_and_command_line_overrides(settings: Settings) -> None:
    layouts = load_layouts(settings)
    assert layouts["yahoo"].columns == YAHOO_MAP and layouts["yahoo"].ticker_from == "filename"

    source = bars_source(
        settings, ["data/"], layout="yahoo", columns={"Adj Close": "close"}, date_format="%Y-%m-%d"
    )

    assert source.columns["Adj Close"] == "close" and "Close" not in source.columns
    assert source.date_format == "%Y-%m-%d" and source.layout == "yahoo"
    assert BarsSource.model_validate_json(source.model_dump_json()) == source


def test_an_unknown_source_lists_the_known_ones(settings: Settings) -> None:
    with pytest.raises(
        NotFoundError, match=r"Unknown source 'yahooo' \(known in sources.yaml: yahoo\)"
    ):
        bars_source(settings, ["x.csv"], layout="yahooo")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"columns": {"Px": "price"}}, "can only be mapped to ticker, date"),
        ({"columns": {"Close": "close", "Last": "close"}}, "several columns are mapped to close"),
        ({"ticker": "IBM", "ticker_from": "filename"}, "either --ticker or --ticker-from"),
        ({"ticker": "ibm"}, "invalid ticker 'ibm'"),
        ({"ticker_pattern": "(?P<ticker>"}, "no regular expression"),
    ],
)
def test_contradicting_or_invalid_options_are_refused(
    settings: Settings, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        bars_source(settings, ["x.csv"], **options)  # type: ignore[arg-type]


def test_a_broken_sources_file_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "profiles").mkdir(parents=True)
    (config / "sources.yaml").write_text("sources:\n  bad:\n    ticker_from: nowhere\n")
    with pytest.raises(ConfigError, match=r"sources.bad.ticker_from"):
        load_layouts(Settings(home=tmp_path / "home", profile="local", config_dir=config))


# --------------------------------------------------------------------------- errors


def test_a_missing_column_names_the_header_and_the_map_that_fixes_it(universe: Path) -> None:
    source = BarsSource(paths=[str(universe)], ticker_from="filename")
    with pytest.raises(DataValidationError) as caught:
        load_source(source, MAX_BYTES, {"yahoo": yahoo([universe])})
    message = caught.value.message
    assert message.startswith("AAPL.csv lacks the columns date, open, high, low, close, volume")
    assert f"it has {YAHOO_HEADER.replace(',', ', ')}" in message
    assert "add --map Date=date --map Open=open" in message and "--map Volume=volume" in message
    assert message.endswith("or use --source yahoo")


def test_a_missing_ticker_column_suggests_where_a_ticker_can_come_from(tmp_path: Path) -> None:
    with pytest.raises(
        DataValidationError, match=r"give --ticker SYMBOL .* --ticker-from filename"
    ):
        load_source(yahoo([yahoo_csv(tmp_path / "AAPL.csv")], ticker_from="column"), MAX_BYTES)


def test_a_map_naming_a_column_the_file_lacks(universe: Path) -> None:
    columns = {**YAHOO_MAP, "Adjusted": "close"}
    columns.pop("Close")
    with pytest.raises(
        InvalidInputError,
        match=r"names 'Adjusted', which AAPL.csv does not have \(it has Date, Open",
    ):
        load_source(yahoo([universe], columns=columns), MAX_BYTES)


def test_different_headers_in_one_batch_name_the_files(universe: Path) -> None:
    yahoo_csv(universe / "ZZZ.csv", header="Date,Open,High,Low,Close,Volume,Adj Close")
    with pytest.raises(DataValidationError) as caught:
        load_source(yahoo([universe]), MAX_BYTES)
    assert "must share one header: AAPL.csv, BRK.B.csv, MSFT.csv have Date" in caught.value.message
    assert "; ZZZ.csv has Date, Open, High, Low, Close, Volume, Adj Close." in caught.value.message


@pytest.mark.parametrize(
    ("paths", "error", "message"),
    [
        (["nothing-*.csv"], NotFoundError, "nothing-\\*.csv matches no file"),
        (["missing.csv"], NotFoundError, "bars file not found"),
        (["README.txt"], InvalidInputError, "unsupported file type for README.txt"),
        ([".", "other.parquet"], InvalidInputError, "either CSV or parquet files"),
    ],
)
def test_paths_that_give_no_batch(
    universe: Path, monkeypatch: pytest.MonkeyPatch, paths: list[str], error: type, message: str
) -> None:
    monkeypatch.chdir(universe)
    (universe / "other.parquet").write_bytes(b"PAR1")
    with pytest.raises(error, match=message):
        load_source(yahoo([Path(p) for p in paths]), MAX_BYTES)


def test_an_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="holds no CSV or parquet file"):
        load_source(yahoo([tmp_path]), MAX_BYTES)


@pytest.mark.parametrize(
    ("name", "pattern", "message"),
    [
        ("aapl.csv", None, "file name aapl.csv \\('aapl'\\): use 1 to 10 uppercase"),
        ("AAPL daily.csv", None, "'AAPL daily'"),
        ("AAPL.csv", r"us_(?P<ticker>\w+)", "does not match the ticker pattern"),
    ],
)
def test_a_file_without_a_ticker_in_its_name_is_named(
    tmp_path: Path, name: str, pattern: str | None, message: str
) -> None:
    yahoo_csv(tmp_path / "MSFT.csv")
    yahoo_csv(tmp_path / name)
    with pytest.raises(DataValidationError, match=message):
        load_source(yahoo([tmp_path], ticker_pattern=pattern), MAX_BYTES)


def test_two_files_of_one_ticker(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        yahoo_csv(tmp_path / folder / "AAPL.csv")
    with pytest.raises(
        DataValidationError, match=r"AAPL\.csv and AAPL\.csv both give the ticker AAPL"
    ):
        load_source(yahoo([tmp_path / "a", tmp_path / "b"]), MAX_BYTES)


def test_a_file_with_its_own_tickers_and_a_ticker_option(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_text("ticker,date,open,high,low,close,volume\nAAA,2024-01-02,1,2,0.5,1.5,10\n")
    with pytest.raises(InvalidInputError, match="has a ticker column"):
        load_source(BarsSource(paths=[str(path)], ticker="BBB"), MAX_BYTES)


def test_the_size_limit_bounds_the_whole_batch(universe: Path) -> None:
    sizes = sum(p.stat().st_size for p in universe.glob("*.csv"))
    assert load_source(yahoo([universe]), sizes).files == 3
    with pytest.raises(
        InvalidInputError, match=f"the 3 files are {sizes} bytes in all, over the limit"
    ):
        load_source(yahoo([universe]), sizes - 1)


def test_header_only_and_empty_files_are_named(universe: Path) -> None:
    (universe / "EMPTY.csv").write_text(YAHOO_HEADER + "\n")
    with pytest.raises(DataValidationError, match=r"EMPTY\.csv has no data rows"):
        load_source(yahoo([universe]), MAX_BYTES)
    (universe / "EMPTY.csv").write_text("")
    with pytest.raises(DataValidationError, match=r"EMPTY\.csv is empty"):
        load_source(yahoo([universe]), MAX_BYTES)


def test_bad_dates_in_one_file_of_many_name_the_file_and_line(universe: Path) -> None:
    path = universe / "MSFT.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace("2024-01-04", "04/01/2024")
    path.write_text("\n\n".join(lines) + "\n")  # blank lines: line 7 of the file, row 3

    with pytest.raises(DataValidationError) as caught:
        load_source(yahoo([universe]), MAX_BYTES)

    assert "MSFT.csv line 7 '04/01/2024'" in caught.value.message
    assert caught.value.message.startswith("3 files of ")


def test_a_malformed_file_of_many_is_named_with_its_line(universe: Path) -> None:
    path = universe / "BRK.B.csv"
    path.write_text(path.read_text() + "2024-02-01,1,2\n")
    with pytest.raises(
        DataValidationError, match=r"malformed CSV BRK.B.csv at line 7: expected 7 fields, saw 3"
    ):
        load_source(yahoo([universe]), MAX_BYTES)


def test_a_ticker_option_for_a_folder_of_many_files(universe: Path) -> None:
    with pytest.raises(InvalidInputError, match="--ticker is the ticker of one file"):
        load_source(yahoo([universe], ticker="AAPL", ticker_from="column"), MAX_BYTES)
