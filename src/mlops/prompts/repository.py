"""The git repository behind the prompt store (GitPython): opening or seeding it, one commit
per change under a file lock, reading files at a commit, the log, tags and pushes."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import git
from filelock import FileLock, Timeout

from mlops.errors import InvalidInputError, NotFoundError, ServiceError
from mlops.fields import UtcDatetime

BRANCH = "main"
RELEASES_DIR = ".releases"
TEMPLATE_FILE = "template.j2"
METADATA_FILE = "prompt.yaml"
_RECORD, _FIELD, _END = "\x1e", "\x1f", "\x1d"
_LOG_FORMAT = f"{_RECORD}%H{_FIELD}%an{_FIELD}%ae{_FIELD}%cn{_FIELD}%ct{_FIELD}%B{_END}"


@dataclass(frozen=True)
class CommitRecord:
    """One commit of the log and the paths it changed."""

    sha: str
    author: str
    author_email: str
    committer: str
    time: UtcDatetime
    message: str
    paths: tuple[str, ...]


def check_author(name: str) -> str:
    """Refuse a commit author/committer name git cannot record (`<`, `>`, control characters)."""
    if not name.strip() or any(ch in "<>" or ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidInputError(
            f"Invalid author name {name!r}: it must be non-empty and contain no '<', '>' "
            "or control characters."
        )
    return name


def identity(name: str) -> git.Actor:
    """A git identity for a platform user or token name."""
    check_author(name)
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in name) or "unknown"
    return git.Actor(name, f"{safe}@mlops.local")


class PromptRepository:
    """A working-tree git repository; every write holds a file lock (and a thread lock)."""

    def __init__(self, path: Path, remote: str | None = None) -> None:
        self.path = path
        self.remote = remote
        self._thread_lock = threading.RLock()
        self._file_lock = FileLock(str(path.parent / f".{path.name}.lock"), timeout=60)
        self.repo: git.Repo | None = None
        self._ref_files = tuple(
            os.path.join(path, ".git", *parts)
            for parts in (("HEAD",), ("refs", "heads", BRANCH), ("packed-refs",))
        )
        self._head_cache: tuple[tuple[tuple[int, int, int] | None, ...], str | None] | None = None

    @contextmanager
    def locked(self) -> Iterator[git.Repo]:
        """Hold the write lock of the repository (threads of this process and other processes)."""
        with self._acquired():
            yield self.git

    @contextmanager
    def _acquired(self) -> Iterator[None]:
        """The thread lock and the file lock; a file lock not acquired in time is a 503."""
        with self._thread_lock:
            try:
                self._file_lock.acquire()
            except Timeout as exc:
                raise ServiceError(
                    f"The prompt repository {self.path} is busy (write lock not acquired in "
                    f"{self._file_lock.timeout:g} s); try again."
                ) from exc
            try:
                yield
            finally:
                self._file_lock.release()

    @property
    def git(self) -> git.Repo:
        if self.repo is None:
            raise ServiceError(f"The prompt repository {self.path} is not open.")
        return self.repo

    def open(self, seed_dir: Path | None, author: str) -> bool:
        """Open the repository, creating it (clone of the remote, else seeded) if absent.
        Returns True when it was created now."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._acquired():
            created = not (self.path / ".git").exists()
            if created:
                self._create(seed_dir, author)
            self.repo = git.Repo(self.path)
        return created

    def _create(self, seed_dir: Path | None, author: str) -> None:
        if self.remote and _remote_has_branch(self.remote):
            git.Repo.clone_from(self.remote, self.path, branch=BRANCH)
            return
        repo = git.Repo.init(self.path, initial_branch=BRANCH)
        with repo.config_writer() as config:
            config.set_value("user", "name", "mlops")
            config.set_value("user", "email", "mlops@mlops.local")
        if self.remote:
            repo.create_remote("origin", self.remote)
        self.repo = repo
        seeds = seed_dir.iterdir() if seed_dir and seed_dir.is_dir() else []
        names = sorted(p.name for p in seeds if (p / TEMPLATE_FILE).is_file())
        for name in names:
            assert seed_dir is not None
            shutil.copytree(seed_dir / name, self.path / name)
            self.commit(
                [f"{name}/{TEMPLATE_FILE}", f"{name}/{METADATA_FILE}"],
                author,
                author,
                f"Import {name} from the shipped prompts",
            )

    def head_sha(self) -> str | None:
        """HEAD's sha, read from the ref files only when one of them changed (a stat each).

        Called on every request, so it avoids GitPython's ref parsing (~0.3 ms) and its
        object reader (not thread-safe)."""
        stamp = tuple(_stat_key(f) for f in self._ref_files)
        cached = self._head_cache
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            sha: str | None = str(git.SymbolicReference.dereference_recursive(self.git, "HEAD"))
        except ValueError:
            sha = None
        self._head_cache = (stamp, sha)
        return sha

    def write(self, files: dict[str, str]) -> None:
        """Write files (paths relative to the repository) into the working tree."""
        for relative, content in files.items():
            target = self.path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")

    def commit(self, paths: list[str], author: str, committer: str, message: str) -> CommitRecord:
        """Stage `paths` and commit them; returns the new commit as the log would show it.
        Git failures (a hook refusing the commit, a git error) are a ServiceError."""
        author_id, committer_id = identity(author), identity(committer)
        index = self.git.index
        try:
            index.add(paths)
            commit = index.commit(message, author=author_id, committer=committer_id, head=True)
        except git.HookExecutionError as exc:
            raise ServiceError(
                f"A git hook of the prompt repository refused the commit: {exc}"
            ) from exc
        except git.GitCommandError as exc:
            raise ServiceError(f"The prompt repository could not commit: {exc}") from exc
        return CommitRecord(
            sha=commit.hexsha,
            author=str(commit.author.name),
            author_email=str(commit.author.email),
            committer=str(commit.committer.name),
            time=datetime.fromtimestamp(commit.committed_date, UTC),
            message=message.strip(),
            paths=tuple(paths),
        )

    def discard(self, paths: list[str]) -> None:
        """Undo uncommitted changes to `paths` (a write that could not be committed): the
        index entries go back to HEAD's (or are removed) and so do the working-tree files."""
        head = self.head_sha()
        try:
            if head is None:
                self.git.git.rm("-q", "--cached", "--ignore-unmatch", "--", *paths)
            else:
                self.git.git.reset("-q", head, "--", *paths)
        except git.GitCommandError:
            self.git.index.reset(head or "HEAD", paths=paths)  # best effort
        for relative in paths:
            target = self.path / relative
            try:
                if head is None:
                    raise KeyError(relative)
                blob = self.git.commit(head).tree / relative
                target.write_bytes(blob.data_stream.read())
            except KeyError:
                target.unlink(missing_ok=True)

    def read(self, sha: str, relative: str) -> str:
        """A file as it was in a commit."""
        return read_blob(self.path, sha, relative)

    def log(self, since: str | None = None, until: str | None = None) -> list[CommitRecord]:
        """Commits oldest first up to `until` (default HEAD; pass the sha that was read, so a
        commit landing meanwhile is not indexed under an older head), after `since`."""
        until = until or self.head_sha()
        if until is None:
            return []
        revs = f"{since}..{until}" if since else until
        out = self.git.git.log(revs, "--reverse", "--name-only", f"--format={_LOG_FORMAT}")
        return [_parse_record(chunk) for chunk in out.split(_RECORD) if chunk.strip()]

    def tag(self, name: str, sha: str, message: str | None, force: bool = False) -> None:
        """Create (or, with force, move) a tag; annotated when a message is given."""
        self.git.create_tag(name, ref=sha, message=message, force=force)

    def tag_commits(self) -> dict[str, str]:
        """Every tag and the commit it points at, in one `git for-each-ref`."""
        out = self.git.git.for_each_ref(
            "refs/tags", format="%(refname:lstrip=2) %(objectname) %(*objectname)"
        )
        found = {}
        for line in str(out).splitlines():
            name, sha, *peeled = line.split(" ")
            found[name] = peeled[0] if peeled and peeled[0] else sha
        return found

    def tag_commit(self, name: str) -> str | None:
        """The commit a tag points at (None: no such tag)."""
        try:
            return str(
                self.git.git.rev_parse("--verify", "--quiet", f"refs/tags/{name}^{{commit}}")
            )
        except git.GitCommandError:
            return None

    def has_tag(self, name: str) -> bool:
        return (self.path / ".git" / "refs" / "tags" / name).is_file() or any(
            t.name == name for t in self.git.tags
        )

    def push(self, refspecs: list[str]) -> None:
        self.git.git.push("origin", *refspecs)


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _remote_has_branch(remote: str) -> bool:
    try:
        heads = str(git.cmd.Git().ls_remote("--heads", remote, BRANCH))
        return bool(heads.strip())
    except git.GitCommandError as exc:
        raise ServiceError(f"The prompt remote {remote} cannot be read: {exc.stderr}") from exc


_read_lock = threading.Lock()


@lru_cache(maxsize=20_000)
def read_blob(path: Path, sha: str, relative: str) -> str:
    """Commits are immutable, so a file at a commit is cached for the life of the process.
    GitPython's object reader (one `git cat-file` process) is not thread-safe: one at a time."""
    with _read_lock:
        repo = _open_repo(path)
        try:
            blob = repo.commit(sha).tree / relative
            data: bytes = blob.data_stream.read()
        except (KeyError, ValueError, git.BadName) as exc:
            raise NotFoundError(f"{relative} does not exist in commit {sha[:10]}.") from exc
    return data.decode("utf-8")


@lru_cache(maxsize=32)
def _open_repo(path: Path) -> git.Repo:
    return git.Repo(path)


def _parse_record(chunk: str) -> CommitRecord:
    header, _, names = chunk.partition(_END)
    sha, author, email, committer, stamp, message = header.split(_FIELD, 5)
    return CommitRecord(
        sha=sha,
        author=author,
        author_email=email,
        committer=committer,
        time=datetime.fromtimestamp(int(stamp), UTC),
        message=message.strip(),
        paths=tuple(line for line in names.splitlines() if line.strip()),
    )
