"""The platform's count of alias moves: per model, never losing a move, even when
several writers count at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.support.settings import make_settings

from mlops.lifecycle import alias_moves


def test_moves_are_counted_per_model(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    assert alias_moves.moves(settings, "a") == 0
    alias_moves.record_move(settings, "a")
    alias_moves.record_move(settings, "a")
    alias_moves.record_move(settings, "b")
    assert (alias_moves.moves(settings, "a"), alias_moves.moves(settings, "b")) == (2, 1)


def test_moves_counted_at_once_are_all_counted(tmp_path: Path) -> None:
    """Four writers race from the first move of a model, which has no row yet."""
    settings = make_settings(tmp_path / "home")
    alias_moves.moves(settings, "m")  # the schema exists before the writers race

    def move_five_times(_: int) -> None:
        for _ in range(5):
            alias_moves.record_move(settings, "m")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(move_five_times, range(4)))
    assert alias_moves.moves(settings, "m") == 20
