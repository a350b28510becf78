"""Loading a universe of per-ticker vendor files (`vendor_files.load_source`).

A script, not a pytest test. It writes ``--files`` Yahoo-style CSVs (Date, Open, High,
Low, Close, Adj Close, Volume; ``--rows`` each) into a temporary folder, then times, best of
``--repeat``:

- ``load_source`` of the folder with the shipped ``yahoo`` layout (one pyarrow parse of all
  bodies, tickers from the file names, dates parsed, columns normalized);
- the same read as a per-file ``pandas.read_csv`` loop plus ``concat`` (no date parsing or
  normalizing), the way a loader without a batch read would do it;
- the floor: reading the files' bytes and one pyarrow parse of the joined bodies.

    .venv/bin/python tests/benchmarks/bench_vendor_files.py --files 5000 --rows 250
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd


def write_universe(folder: Path, files: int, rows: int) -> None:
    """Seeded random walks, written as text directly (pandas' to_csv per file is slow)."""
    rng = np.random.default_rng(7)
    days = pd.bdate_range("2020-01-02", periods=rows).strftime("%Y-%m-%d")
    for i in range(files):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
        volume = rng.integers(1_000, 1_000_000, rows)
        lines = [
            f"{d},{c:.4f},{c * 1.01:.4f},{c * 0.99:.4f},{c:.4f},{c * 0.98:.4f},{v}"
            for d, c, v in zip(days, close, volume, strict=True)
        ]
        text = "Date,Open,High,Low,Close,Adj Close,Volume\n" + "\n".join(lines) + "\n"
        (folder / f"T{i:05d}.csv").write_text(text)


def best_of(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from mlops.features.bars_csv import read_csv_batch
    from mlops.features.sources import bars_source
    from mlops.features.vendor_files import load_source
    from mlops.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "yahoo"
        folder.mkdir()
        write_universe(folder, args.files, args.rows)
        files = sorted(folder.glob("*.csv"))
        size = sum(p.stat().st_size for p in files)
        settings = Settings(home=Path(tmp) / "home", profile="local")
        source = bars_source(settings, [str(folder)], layout="yahoo")

        def platform() -> object:
            return load_source(source, 4 * 1024**3)

        def pandas_loop() -> object:
            frames = [pd.read_csv(p).assign(ticker=p.stem) for p in files]
            return pd.concat(frames, ignore_index=True)

        def floor() -> object:
            batch = read_csv_batch(files)
            return pa_csv.read_csv(
                pa.py_buffer(batch.text), pa_csv.ReadOptions(autogenerate_column_names=True)
            )

        rows = len(load_source(source, 4 * 1024**3).frame)
        print(f"{args.files} files x {args.rows} rows = {rows} rows, {size / 1e6:.1f} MB")
        print(f"| read | seconds (best of {args.repeat}) |")
        print("| --- | --- |")
        for name, work in (
            ("load_source (yahoo layout, normalized)", platform),
            ("pandas.read_csv per file + concat", pandas_loop),
            ("floor: bytes + one pyarrow parse", floor),
        ):
            print(f"| {name} | {best_of(args.repeat, work):.2f} |")


if __name__ == "__main__":
    main()
