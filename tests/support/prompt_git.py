"""Helpers of the prompt-governance tests: git as a user would run it in the prompt repository."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    """Run git in a repository and return its output."""
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


def repo_snapshot(repo: Path) -> tuple[str, str, str]:
    """HEAD, `git status` and the tag list: equal before and after a refused change."""
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "status", "--porcelain", "--untracked-files=all"),
        git(repo, "tag", "--list"),
    )
