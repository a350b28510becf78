"""Prompt-governance benchmark: the platform's API over a git store of 200 templates x 20
versions and 1M usage events, with rendering compared to plain Jinja2 in the same run.

Run:  .venv/bin/python tests/benchmarks/bench_prompts.py           (full: 200 x 20, 1M events)
      .venv/bin/python tests/benchmarks/bench_prompts.py --quick   (20 x 5, 100k events)

Not a pytest test. Everything happens in a temporary state folder that is deleted at the
end (pass --keep to keep it). Prints markdown tables; exits 0 even when a target fails
(failures are shown as FAIL).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_features import log, md_table, once, percentile

sys.path.insert(0, str(Path(__file__).parents[2]))  # for `tests.support.render_payloads`

TEMPLATE = """You are a markets analyst covering {desk}. Write a {{{{ style }}}} summary of the
{{{{ universe }}}} session on {{{{ as_of }}}}.

Index moves:
{{% for index, move in index_moves | dictsort %}}- {{{{ index }}}}: {{{{ "%+.2f" | format(move) }}}}%
{{% endfor %}}
{{% if headlines %}}Headlines to weigh:
{{% for headline in headlines[:max_headlines] %}}- {{{{ headline }}}}
{{% endfor %}}
{{% endif %}}Keep it under {{{{ max_words }}}} words (revision {revision}).
"""
METADATA = {
    "description": "Benchmark market summary",
    "owner": "bench",
    "tags": ["bench"],
    "variables": {
        "universe": {"type": "string"},
        "as_of": {"type": "string"},
        "index_moves": {"type": "object"},
        "headlines": {"type": "list", "required": False, "default": []},
        "max_headlines": {"type": "integer", "required": False, "default": 5},
        "style": {"type": "string", "required": False, "default": "concise"},
        "max_words": {"type": "integer", "required": False, "default": 150},
    },
}
VARIABLES = {
    "universe": "US equities",
    "as_of": "2026-11-24",
    "index_moves": {"SPX": 0.42, "NDX": 1.1, "RUT": -0.35},
    "headlines": ["Fed minutes signal patience", "Chipmakers rally on guidance"],
}
API = "/api/v1/prompt-governance"


def stats_row(label: str, samples: list[float], target: float | None) -> list[Any]:
    p50, p95 = percentile(samples, 0.5), percentile(samples, 0.95)
    verdict = "" if target is None else f"p95 < {target:g} ms: {'PASS' if p95 < target else 'FAIL'}"
    return [label, len(samples), f"{p50:.3f}", f"{p95:.3f}", verdict]


def build_store(client: Any, n_templates: int, n_versions: int) -> tuple[list[float], list[float]]:
    """Create the templates and their versions through the API; returns the latencies (ms)."""
    creates, updates = [], []
    for t in range(n_templates):
        body = {"name": f"bench-{t:03d}", "metadata": METADATA, "message": "create"}
        body["template"] = TEMPLATE.format(desk=f"desk {t}", revision=1)
        started = time.perf_counter()
        response = client.post(f"{API}/templates", json=body)
        creates.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 201, response.text
    for version in range(2, n_versions + 1):
        for t in range(n_templates):
            body = {
                "base_version": version - 1,
                "template": TEMPLATE.format(desk=f"desk {t}", revision=version),
                "message": f"revision {version}",
            }
            started = time.perf_counter()
            response = client.put(f"{API}/templates/bench-{t:03d}", json=body)
            updates.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
        log(f"versions: {version}/{n_versions}")
    return creates, updates


def load_usage(url: str, n_events: int, n_templates: int, hot_share: float) -> None:
    """Bulk insert usage events (executemany in chunks) over the last 7 days."""
    from mlops.prompts.usage import insert_events, usage_engine

    rng = random.Random(7)
    now_ms = int(time.time() * 1000)
    week_ms = 7 * 86_400_000
    chunk = 50_000
    for start in range(0, n_events, chunk):
        rows = []
        for i in range(start, min(start + chunk, n_events)):
            hot = rng.random() < hot_share
            failed = rng.random() < 0.03
            rows.append(
                {
                    "id": f"{i:032x}",
                    "template": "bench-000" if hot else f"bench-{rng.randrange(n_templates):03d}",
                    "version": rng.randint(1, 20),
                    "status": "failure" if failed else "success",
                    "error_kind": rng.choice(["missing_variable", "timeout"]) if failed else None,
                    "latency_ms": rng.lognormvariate(-2.5, 0.6),
                    "caller": "bench",
                    "at_ms": now_ms - rng.randrange(week_ms),
                    "outcome": None,
                    "outcome_detail": None,
                    "outcome_at_ms": None,
                }
            )
        with usage_engine(url).begin() as conn:
            insert_events(conn, rows)
        log(f"usage events: {min(start + chunk, n_events):,}/{n_events:,}")


def compare_render(
    store: Any, name: str, reps: int
) -> tuple[list[float], list[float], list[float]]:
    """The platform's render (sandbox, checks, usage event), the same without resolving the
    version and recording the event, and plain Jinja2; interleaved."""
    import jinja2

    record = store.record(name)
    source = store.repository.read(record.commit.sha, f"{name}/template.j2")
    plain = jinja2.Environment(keep_trailing_newline=True).from_string(source)
    bound = {**{k: v["default"] for k, v in METADATA["variables"].items() if "default" in v}}
    bound.update(VARIABLES)
    assert plain.render(**bound) == store.render(name, VARIABLES, "bench", label="latest").output
    ours, core, bare = [], [], []
    for _ in range(reps):
        ours.append(once(lambda _i: store.render(name, VARIABLES, "bench", label="latest"), 0))
        core.append(once(lambda _i: store.render_version(name, record, VARIABLES), 0))
        bare.append(once(lambda _i: plain.render(**bound), 0))
    return ours, core, bare


def refusal_times() -> list[float]:
    """Seconds the sandbox takes to refuse each template that would build a huge value (the
    unit tests check that each is refused within the memory bound; this says how fast)."""
    from tests.support.render_payloads import CHAIN_INPUT, ISSUE_CHAINS, MEMORY_PAYLOADS, REFUSALS

    from mlops.prompts.rendering import PromptEnvironment, RenderError, render_template

    times = []
    for source, variables in [(p, {"x": CHAIN_INPUT}) for p in ISSUE_CHAINS] + [
        (p, {"x": "text"}) for p in MEMORY_PAYLOADS
    ]:
        env = PromptEnvironment(lambda _sha, _name, source=source: source)
        started = time.perf_counter()
        try:
            render_template(env, "sha", "main", variables, 60.0)
        except RenderError as error:
            assert error.kind in REFUSALS, error.message
        else:
            raise AssertionError(f"not refused: {source}")
        times.append(time.perf_counter() - started)
    return times


def record_costs(url: str, reps: int) -> tuple[list[float], list[float], int]:
    """Recording one event (buffered) vs one synchronous insert; checks none are lost."""
    from sqlalchemy import func, select

    from mlops.prompts.usage import EVENTS, insert_events, new_event, recorder_for, usage_engine

    recorder = recorder_for(url)
    recorder.flush()
    with usage_engine(url).connect() as conn:
        before = conn.execute(select(func.count()).select_from(EVENTS)).scalar_one()
    buffered = []
    for _ in range(reps):
        event = new_event("bench-001", 1, None, 0.1, "bench")
        started = time.perf_counter()
        recorder.record(event)
        buffered.append((time.perf_counter() - started) * 1000)
    recorder.close()
    sync = []
    for _ in range(200):
        event = new_event("bench-001", 1, None, 0.1, "bench")
        started = time.perf_counter()
        with usage_engine(url).begin() as conn:
            insert_events(conn, [event])
        sync.append((time.perf_counter() - started) * 1000)
    with usage_engine(url).connect() as conn:
        after = conn.execute(select(func.count()).select_from(EVENTS)).scalar_one()
    return buffered, sync, after - before - 200


def postgres_usage(
    settings: Any, n_events: int, n_templates: int, reps: int, url: str
) -> list[list[Any]]:
    """The usage endpoint with the same events in PostgreSQL (the production profile)."""
    import uuid

    from fastapi.testclient import TestClient
    from sqlalchemy import create_engine, text

    from mlops.app import create_app
    from mlops.db import engine_for

    name = f"mlops_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{url}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = f"{url}/{name}"
    pg = settings.model_copy(update={"metadata_db_url": db_url, "profile": "production"})
    rows = []
    try:
        load_usage(db_url, n_events, n_templates, hot_share=0.2)
        # As autovacuum would after a bulk load: index-only scans need the visibility map.
        vacuum = create_engine(db_url, isolation_level="AUTOCOMMIT")
        with vacuum.connect() as conn:
            conn.execute(text("VACUUM ANALYZE prompt_usage_events"))
        vacuum.dispose()
        with TestClient(create_app(pg)) as client:
            client.headers["Authorization"] = "Bearer bench"
            typical = timed(
                lambda i: client.get(f"{API}/templates/bench-{1 + i % 5:03d}/usage"), reps
            )
            rows.append(
                stats_row("PostgreSQL: GET .../usage, hour buckets (typical)", typical, 100)
            )
            hot = timed(
                lambda i: client.get(f"{API}/templates/bench-000/usage?bucket=day"), reps // 5
            )
            rows.append(stats_row("PostgreSQL: GET .../usage, day buckets (hot)", hot, 100))
    finally:
        engine_for(db_url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
    return rows


def timed(fn: Callable[[int], Any], reps: int) -> list[float]:
    for i in range(2):
        fn(i)
    return [once(fn, i) for i in range(reps)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller smoke run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432",
        help="server for the PostgreSQL usage rows ('' to skip); a temporary database is used",
    )
    args = parser.parse_args()
    n_templates, n_versions = (20, 5) if args.quick else (200, 20)
    n_events = 100_000 if args.quick else 1_000_000
    reps = 30 if args.quick else 100
    t_total = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mlops-bench-prompts-"))
    (tmp / "empty").mkdir()

    from fastapi.testclient import TestClient

    from mlops.app import create_app
    from mlops.prompts.store import open_store
    from mlops.settings import Settings

    settings = Settings(
        home=tmp / "home",
        profile="local",
        feast_registry_url="unused",
        redis_url="unused",
        prompts_source_dir=tmp / "empty",
        prompts_mlflow_registry=False,
        api_token="bench",
    )
    settings.ensure_dirs()
    rows: list[list[Any]] = []
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = "Bearer bench"
        log(f"building {n_templates} templates x {n_versions} versions through the API")
        creates, updates = build_store(client, n_templates, n_versions)
        load_usage(settings.metadata_url, n_events, n_templates, hot_share=0.2)
        names = [f"bench-{t:03d}" for t in range(n_templates)]
        rows.append(stats_row("POST /templates (create, 1 commit)", creates, None))
        rows.append(stats_row("PUT /templates/{id} (update, 1 commit)", updates, 100))
        listing = timed(lambda i: client.get(f"{API}/templates").json(), reps)
        assert len(client.get(f"{API}/templates").json()) == n_templates
        rows.append(stats_row(f"GET /templates ({n_templates} templates)", listing, 50))
        history = timed(
            lambda i: client.get(f"{API}/templates/{names[i % len(names)]}/versions"), reps
        )
        rows.append(
            stats_row(f"GET /templates/{{id}}/versions ({n_versions} versions)", history, 50)
        )
        body = {"variables": VARIABLES, "label": "latest"}
        api_render = timed(
            lambda i: client.post(f"{API}/templates/{names[i % 7]}/render", json=body), reps
        )
        rows.append(stats_row("POST /templates/{id}/render", api_render, None))
        typical = timed(
            lambda i: client.get(f"{API}/templates/{names[1 + i % 5]}/usage?bucket=hour"), reps
        )
        per_template = n_events * 0.8 / n_templates
        rows.append(
            stats_row(f"GET .../usage, hour buckets (~{per_template:,.0f} events)", typical, 100)
        )
        hot = timed(
            lambda i: client.get(f"{API}/templates/{names[0]}/usage?bucket=day"), max(10, reps // 5)
        )
        rows.append(
            stats_row(f"GET .../usage, day buckets (hot, ~{n_events * 0.2:,.0f} events)", hot, 100)
        )
    store = open_store(settings)
    ours, core, bare = compare_render(store, names[3], reps * 20)
    rows.append(stats_row("render in the platform (sandbox + checks + usage event)", ours, None))
    rows.append(stats_row("  of which sandbox + budgets + variable checks", core, None))
    rows.append(stats_row("render with plain Jinja2 (same template, compiled)", bare, None))
    refusals = [t * 1000 for t in refusal_times()]
    rows.append(
        stats_row(
            f"refuse a template that would build a huge value ({len(refusals)} kinds)",
            refusals,
            1000,
        )
    )
    buffered, sync, written = record_costs(settings.metadata_url, reps * 100)
    rows.append(stats_row("record one usage event (buffered)", buffered, 1))
    rows.append(stats_row("insert one usage event synchronously (for comparison)", sync, None))
    if args.postgres:
        log("loading the same usage events into PostgreSQL")
        rows.extend(postgres_usage(settings, n_events, n_templates, reps, args.postgres))
    ratio50 = percentile(ours, 0.5) / percentile(bare, 0.5)
    ratio95 = percentile(ours, 0.95) / percentile(bare, 0.95)
    print(
        f"#### Prompt governance: {n_templates} templates x {n_versions} versions, {n_events:,} usage events (ms)\n"
    )
    print(md_table(["operation", "n", "p50", "p95", "target"], rows))
    verdict = "PASS" if ratio95 <= 1.5 else "FAIL"
    print(
        f"\nRender ratio platform / plain Jinja2: p50 {ratio50:.2f}x, p95 {ratio95:.2f}x (target <= 1.5x: {verdict})."
    )
    print(
        f"Buffered events written at close: {written:,} of {len(buffered):,} (none lost: {written == len(buffered)})."
    )
    print(f"Total benchmark run time: {time.perf_counter() - t_total:.0f} s.")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        log(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
