"""The git-backed store on real repositories: versions are commits, history is the git log,
stale writes are refused, bad input changes nothing, concurrent writers never corrupt it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from tests.support.prompt_git import git, repo_snapshot

from mlops.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    ServiceError,
    UnsafePathError,
)
from mlops.prompts import publishing
from mlops.prompts.models import PromptMetadata, VariableSpec
from mlops.prompts.rendering import RenderError
from mlops.prompts.store import PromptStore
from mlops.settings import Settings

SHIPPED = [
    "compliance_footer",
    "earnings_call_digest",
    "market_summary",
    "risk_report",
    "trade_rationale",
]
META = PromptMetadata(
    description="greeting", owner="desk", tags=["t"], variables={"who": VariableSpec()}
)


def _create(store: PromptStore, name: str = "greet", source: str = "Hello {{ who }}") -> int:
    return store.create(name, source, META, "alice", "api-token", "first").version


def test_a_new_store_is_seeded_from_the_shipped_prompts(store: PromptStore) -> None:
    items = store.list_templates()
    assert [t.name for t in items] == SHIPPED
    assert all(t.latest_version == 1 and t.status == "draft" and t.calls == 0 for t in items)
    for name in SHIPPED:
        report = store.run_examples(name)
        assert report.passed and report.results, report
    assert git(store.repository.path, "status", "--porcelain") == ""


def test_versions_are_commits_and_history_is_the_git_log(store: PromptStore) -> None:
    _create(store)
    store.update("greet", 1, "Hi {{ who }}!", None, "bob", "api-token", "friendlier")
    detail = store.update(
        "greet", 2, None, META.model_copy(update={"owner": "ops"}), "carol", "api-token", "owner"
    )
    assert (
        detail.version == 3
        and detail.metadata.owner == "ops"
        and detail.template == "Hi {{ who }}!"
    )
    history = store.history("greet")
    repo = store.repository.path
    log = git(repo, "log", "--reverse", "--format=%H|%an|%cn|%s", "--", "greet").splitlines()
    assert [f"{v.sha}|{v.author}|{v.committer}|{v.message}" for v in history] == log
    assert [v.version for v in history] == [1, 2, 3]
    assert git(repo, "show", f"{history[1].sha}:greet/template.j2") == "Hi {{ who }}!"
    diff = store.diff("greet", 1, 3)
    assert "-Hello {{ who }}" in diff.template_diff and "+Hi {{ who }}!" in diff.template_diff
    assert "-owner: desk" in diff.metadata_diff and "+owner: ops" in diff.metadata_diff
    assert store.diff("greet", 2, 3).template_diff == ""
    assert store.detail("greet", 1).template == "Hello {{ who }}"


def test_a_stale_base_version_is_409_with_the_current_version(store: PromptStore) -> None:
    _create(store)
    store.update("greet", 1, "v2 {{ who }}", None, "a", "a")
    before = repo_snapshot(store.repository.path)
    with pytest.raises(ConflictError) as info:
        store.update("greet", 1, "lost {{ who }}", None, "b", "b")
    assert info.value.details["current_version"] == 2 and info.value.http_status == 409
    assert repo_snapshot(store.repository.path) == before
    with pytest.raises(ConflictError):
        _create(store)


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../x",
        "a/b",
        "/etc/passwd",
        "a\x00b",
        "a\nb",
        "tab\tname",
        "x" * 101,
        "",
        "Upper",
        ".hidden",
        "a..b",
    ],
)
def test_unsafe_names_are_refused(store: PromptStore, name: str) -> None:
    before = repo_snapshot(store.repository.path)
    with pytest.raises(UnsafePathError):
        _create(store, name)
    with pytest.raises(UnsafePathError):
        store.detail(name)
    assert repo_snapshot(store.repository.path) == before


BAD_WRITES = [
    ("invalid yaml", "Hello {{ who }}", "variables: [unclosed\n", "not valid YAML at line"),
    ("not a mapping", "Hello {{ who }}", "- a list\n", "must be a mapping"),
    ("unknown field", "Hello {{ who }}", "colour: blue\n", "colour"),
    ("bad type", "Hello {{ who }}", "variables:\n  who: {type: str}\n", "variables.who.type"),
    (
        "bad default",
        "{{ n }}",
        "variables:\n  n: {type: integer, default: abc}\n",
        "Default of variable 'n'",
    ),
    (
        "undeclared",
        "Hello {{ who }} {{ secret }}",
        "variables:\n  who: {}\n",
        "undeclared variable(s): secret",
    ),
    ("syntax", "Hello {{ who }", "variables:\n  who: {}\n", "line 1"),
    ("too large", "x" * (100 * 1024 + 1), "{}\n", "limit is 102400 bytes"),
]


@pytest.mark.parametrize(
    ("case", "source", "meta", "message"), BAD_WRITES, ids=[c[0] for c in BAD_WRITES]
)
def test_bad_writes_are_422_and_change_nothing(
    store: PromptStore, case: str, source: str, meta: str, message: str
) -> None:
    _create(store)
    before = repo_snapshot(store.repository.path)
    for attempt in (
        lambda: store.create("fresh", source, meta, "a", "a"),
        lambda: store.update("greet", 1, source, meta, "a", "a"),
    ):
        with pytest.raises(InvalidInputError) as info:
            attempt()
        assert message in info.value.message and info.value.http_status == 422
    assert repo_snapshot(store.repository.path) == before
    assert [v.version for v in store.history("greet")] == [1]


def test_an_update_that_changes_nothing_is_refused(store: PromptStore) -> None:
    _create(store)
    with pytest.raises(InvalidInputError, match="Nothing changed"):
        store.update("greet", 1, "Hello {{ who }}", META, "a", "a")


def test_unknown_templates_and_versions_are_404(store: PromptStore) -> None:
    with pytest.raises(NotFoundError):
        store.detail("missing")
    with pytest.raises(NotFoundError):
        store.update("missing", 1, "x", None, "a", "a")
    with pytest.raises(NotFoundError) as info:
        store.diff("market_summary", 1, 9)
    assert info.value.details == {"latest_version": 1}


def test_publish_tags_the_version_and_moves_the_production_label(store: PromptStore) -> None:
    _create(store)
    store.update("greet", 1, "Hi {{ who }}", None, "a", "a")
    first = publishing.publish(store, "greet", 1, "alice", "go live")
    assert first.tag == "greet/v1" and first.pushed is None and first.mlflow is None
    repo = store.repository.path
    sha1, sha2 = (v.sha for v in store.history("greet"))
    assert git(repo, "rev-parse", "greet/v1^{commit}").strip() == sha1
    assert git(repo, "rev-parse", "greet/production").strip() == sha1
    publishing.publish(store, "greet", 2, "alice")
    assert git(repo, "rev-parse", "greet/production").strip() == sha2
    back = publishing.rollback(store, "greet", 1, "bob", "v2 hallucinates")
    assert back.event == "rollback" and git(repo, "rev-parse", "greet/production").strip() == sha1
    detail = store.detail("greet")
    assert detail.status == "published" and detail.published_version == 1 and detail.version == 2
    assert [(e.event, e.version, e.by) for e in detail.releases] == [
        ("publish", 1, "alice"),
        ("publish", 2, "alice"),
        ("rollback", 1, "bob"),
    ]
    assert [(v.version, v.published, v.live) for v in store.history("greet")] == [
        (1, True, True),
        (2, True, False),
    ]
    subjects = git(repo, "log", "--format=%s", "-3").splitlines()
    assert subjects == ["rollback greet v1", "publish greet v2", "publish greet v1"]
    rendered = store.render("greet", {"who": "desk"}, "tester")
    assert rendered.output == "Hello desk" and rendered.version == 1
    assert store.render("greet", {"who": "x"}, "t", label="latest").output == "Hi x"
    assert git(repo, "status", "--porcelain") == ""


def test_refused_releases_change_nothing(store: PromptStore) -> None:
    _create(store)
    bad_meta = META.model_copy(
        update={"examples": [{"name": "e1", "variables": {"who": "a"}, "expected": "Hi a"}]}
    )
    store.update("greet", 1, None, bad_meta, "a", "a")
    before = repo_snapshot(store.repository.path)
    with pytest.raises(NotFoundError):
        publishing.publish(store, "greet", 7, "a")
    with pytest.raises(ConflictError, match="never been published"):
        publishing.rollback(store, "greet", 1, "a")
    with pytest.raises(InvalidInputError) as info:
        publishing.publish(store, "greet", 2, "a")
    failure = info.value.details["failures"][0]
    assert (
        failure["name"] == "e1" and failure["output"] == "Hello a" and failure["expected"] == "Hi a"
    )
    assert repo_snapshot(store.repository.path) == before
    publishing.publish(store, "greet", 1, "a")
    before = repo_snapshot(store.repository.path)
    with pytest.raises(NotFoundError):
        publishing.rollback(store, "greet", 5, "a")
    with pytest.raises(ConflictError, match="already live"):
        publishing.rollback(store, "greet", 1, "a")
    with pytest.raises(NotFoundError):
        publishing.publish(store, "nope", 1, "a")
    assert repo_snapshot(store.repository.path) == before


def test_archive_hides_from_listing_and_keeps_history(store: PromptStore) -> None:
    _create(store)
    publishing.set_archived(store, "greet", True, "a", "retired")
    assert "greet" not in [t.name for t in store.list_templates()]
    archived = [t for t in store.list_templates(include_archived=True) if t.name == "greet"]
    assert archived[0].status == "archived"
    assert len(store.history("greet")) == 1
    with pytest.raises(ConflictError, match="archived"):
        store.update("greet", 1, "x {{ who }}", None, "a", "a")
    with pytest.raises(ConflictError):
        publishing.publish(store, "greet", 1, "a")
    assert publishing.set_archived(store, "greet", False, "a").status == "draft"
    assert "greet" in [t.name for t in store.list_templates()]


def test_renders_resolve_versions_and_labels(store: PromptStore) -> None:
    _create(store)
    with pytest.raises(ConflictError, match="no published version"):
        store.render("greet", {"who": "a"}, "t")
    with pytest.raises(InvalidInputError, match="Unknown label"):
        store.render("greet", {"who": "a"}, "t", label="staging")
    assert store.render("greet", {"who": "a"}, "t", version=1).output == "Hello a"
    with pytest.raises(RenderError) as info:
        store.render("greet", {}, "t", version=1)
    assert info.value.kind == "missing_variable" and len(info.value.details["render_id"]) == 32


def test_another_process_commits_are_seen(settings: Settings, store: PromptStore) -> None:
    other = PromptStore(settings)
    other.create("greet", "Hello {{ who }}", META, "a", "a")
    assert store.detail("greet").version == 1
    store.update("greet", 1, "Hey {{ who }}", None, "b", "b")
    assert other.detail("greet").template == "Hey {{ who }}"
    assert PromptStore(settings).history("greet") == store.history("greet")


def test_twenty_parallel_updates_with_the_same_base_commit_exactly_one(store: PromptStore) -> None:
    _create(store)
    barrier = threading.Barrier(20)

    def write(i: int) -> str:
        barrier.wait()
        try:
            store.update("greet", 1, f"writer {i} {{{{ who }}}}", None, f"w{i}", "api")
            return "committed"
        except ConflictError as exc:
            assert exc.details["current_version"] == 2
            return "refused"

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(write, range(20)))
    assert sorted(results) == ["committed"] + ["refused"] * 19
    assert len(store.history("greet")) == 2
    assert git(store.repository.path, "fsck", "--strict") == ""


def _retrying_writer(settings: Settings, i: int, barrier: Any, queue: Any) -> None:
    """A separate process: writes its own line, retrying from the current version on 409.
    Reports (i, refusals) or (i, the error) so a failing child never hangs the others."""
    try:
        own = PromptStore(settings)
        base = own.record("greet").version
        barrier.wait(timeout=60)
    except BaseException as exc:
        barrier.abort()
        queue.put((i, repr(exc)))
        return
    refusals = 0
    while True:
        try:
            own.update("greet", base, f"writer {i} {{{{ who }}}}", None, f"w{i}", "api")
            break
        except ConflictError as exc:
            refusals += 1
            base = exc.details["current_version"]
        except BaseException as exc:
            queue.put((i, repr(exc)))
            return
    queue.put((i, refusals))


def test_twenty_processes_updating_concurrently_lose_nothing(
    settings: Settings, store: PromptStore
) -> None:
    import multiprocessing

    _create(store)
    ctx = multiprocessing.get_context("spawn")  # clean processes: no state shared by fork
    barrier, queue = ctx.Barrier(20), ctx.Queue()
    workers = [
        ctx.Process(target=_retrying_writer, args=(settings, i, barrier, queue)) for i in range(20)
    ]
    for w in workers:
        w.start()
    results = dict(queue.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(timeout=30)
    errors = {i: r for i, r in results.items() if isinstance(r, str)}
    assert not errors
    assert sorted(results) == list(range(20)) and sum(results.values()) > 0
    repo = store.repository.path
    history = store.history("greet")
    assert len(history) == 21
    contents = sorted(git(repo, "show", f"{v.sha}:greet/template.j2") for v in history[1:])
    assert contents == sorted(f"writer {i} {{{{ who }}}}" for i in range(20))
    assert git(repo, "fsck", "--strict") == ""
    assert git(repo, "status", "--porcelain") == ""


def test_publishing_pushes_to_the_remote_and_a_new_store_clones_it(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--bare", "--initial-branch=main", str(remote))
    settings = Settings(
        home=tmp_path / "a", prompts_remote=str(remote), prompts_mlflow_registry=False
    )
    store = PromptStore(settings)
    result = publishing.publish(store, "risk_report", 1, "alice")
    assert result.pushed is True and result.push_error is None
    assert git(remote, "rev-parse", "main").strip() == store.repository.head_sha()
    assert git(remote, "rev-parse", "risk_report/production").strip() == result.sha
    tag_object = git(remote, "rev-parse", "risk_report/v1").strip()
    meta = store.repository.read(result.sha, "risk_report/prompt.yaml")
    store.update("risk_report", 1, None, meta.replace("risk memo", "risk note"), "a", "a")
    assert publishing.publish(store, "risk_report", 2, "alice").pushed is True
    back = publishing.rollback(store, "risk_report", 1, "bob")
    assert back.pushed is True and back.push_error is None
    assert git(remote, "rev-parse", "risk_report/production").strip() == result.sha
    assert git(remote, "rev-parse", "risk_report/v1").strip() == tag_object
    clone = PromptStore(
        Settings(home=tmp_path / "b", prompts_remote=str(remote), prompts_mlflow_registry=False)
    )
    assert clone.detail("risk_report").published_version == 1
    assert clone.history("risk_report") == store.history("risk_report")


def test_a_failed_push_keeps_the_publish_and_says_so(tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "--bare", "--initial-branch=main", str(remote))
    store = PromptStore(
        Settings(home=tmp_path / "a", prompts_remote=str(remote), prompts_mlflow_registry=False)
    )
    (remote / "hooks" / "pre-receive").write_text("#!/bin/sh\necho refused by policy >&2\nexit 1\n")
    (remote / "hooks" / "pre-receive").chmod(0o755)
    result = publishing.publish(store, "risk_report", 1, "alice")
    assert result.pushed is False and "refused by policy" in (result.push_error or "")
    assert store.detail("risk_report").published_version == 1


def _assert_next_commit_is_only_its_own(store: PromptStore, before: tuple[str, str, str]) -> None:
    repo = store.repository.path
    assert repo_snapshot(repo) == before
    source = store.detail("risk_report").template
    store.update("risk_report", 1, source + "\nok edit\n", None, "bob", "bob", "bob's edit")
    files = git(repo, "show", "--name-only", "--format=", "HEAD").split()
    assert files == ["risk_report/template.j2"]
    assert "REFUSED" not in git(repo, "show", "HEAD:market_summary/template.j2")
    assert [v.version for v in store.history("market_summary")] == [1]


@pytest.mark.parametrize("author", ["Bob <bob@corp.com>", "a>b", "x\ny", "tab\there", " "])
def test_an_invalid_author_is_422_and_stages_nothing(store: PromptStore, author: str) -> None:
    before = repo_snapshot(store.repository.path)
    source = store.detail("market_summary").template
    with pytest.raises(InvalidInputError, match="author"):
        store.update("market_summary", 1, source + "\nREFUSED\n", None, author, "api", "bad")
    _assert_next_commit_is_only_its_own(store, before)


def test_a_commit_refused_by_a_hook_is_503_and_stages_nothing(store: PromptStore) -> None:
    repo = store.repository.path
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho refused by policy >&2\nexit 1\n")
    hook.chmod(0o755)
    before = repo_snapshot(repo)
    source = store.detail("market_summary").template
    with pytest.raises(ServiceError, match="hook"):
        store.update("market_summary", 1, source + "\nREFUSED\n", None, "alice", "api", "x")
    hook.unlink()
    _assert_next_commit_is_only_its_own(store, before)


def test_a_busy_write_lock_is_a_service_error(store: PromptStore) -> None:
    lock = store.repository._file_lock
    other = FileLock(lock.lock_file, timeout=0.1)
    store.repository._file_lock = other
    with FileLock(lock.lock_file, timeout=1), pytest.raises(ServiceError, match="busy"):
        _create(store)


def test_files_outside_template_folders_do_not_make_templates(store: PromptStore) -> None:
    repo = store.repository.path
    (repo / ".github").mkdir()
    (repo / ".github" / "ci.yml").write_text("x: 1\n")
    (repo / "NOTES.md").write_text("notes\n")
    (repo / "market_summary" / "README.md").write_text("about\n")
    git(repo, "add", ".github/ci.yml", "NOTES.md", "market_summary/README.md")
    git(repo, "-c", "user.name=ci", "-c", "user.email=ci@x", "commit", "-qm", "ci files")
    assert [t.name for t in store.list_templates()] == SHIPPED
    assert [v.version for v in store.history("market_summary")] == [1]


def test_a_refresh_indexes_up_to_the_head_it_read(settings: Settings, store: PromptStore) -> None:
    other = PromptStore(settings)
    _create(store)
    read_head = store.repository.head_sha()
    store.update("greet", 1, "Hi {{ who }}", None, "alice", "api", "second")
    real = other.repository.head_sha
    # The other store read HEAD just before the second commit of `greet` landed.
    other.repository.head_sha = lambda: read_head  # type: ignore[method-assign]
    other.index.refresh()
    other.repository.head_sha = real  # type: ignore[method-assign]
    assert [v.version for v in other.history("greet")] == [1, 2]
    assert other.index.head == real()


def test_rollback_only_goes_back_to_an_earlier_published_version(store: PromptStore) -> None:
    _create(store)
    store.update("greet", 1, "Hi {{ who }}", None, "a", "a")
    store.update("greet", 2, "Hey {{ who }}", None, "a", "a")
    publishing.publish(store, "greet", 1, "a")
    before = repo_snapshot(store.repository.path)
    with pytest.raises(InvalidInputError, match="never published") as info:
        publishing.rollback(store, "greet", 3, "a")
    assert info.value.details["published_versions"] == [1]
    with pytest.raises(ConflictError, match="already live"):
        publishing.rollback(store, "greet", 1, "a")
    assert repo_snapshot(store.repository.path) == before
    publishing.publish(store, "greet", 2, "a")
    back = publishing.rollback(store, "greet", 1, "a")
    assert back.event == "rollback" and store.state("greet").live_version == 1


def test_any_failure_after_staging_unstages_the_edit(
    store: PromptStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import git as gitpython

    def broken_commit(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    before = repo_snapshot(store.repository.path)
    source = store.detail("market_summary").template
    with monkeypatch.context() as patch:
        patch.setattr(gitpython.IndexFile, "commit", broken_commit)
        with pytest.raises(RuntimeError, match="disk full"):
            store.update("market_summary", 1, source + "\nREFUSED\n", None, "alice", "api", "x")
    _assert_next_commit_is_only_its_own(store, before)
