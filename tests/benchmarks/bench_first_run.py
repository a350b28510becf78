"""First run after `mlops api` starts vs the next: does a user's first deployment or
evaluation pay for starting Prefect, importing libraries and opening stores?

Run:  .venv/bin/python tests/benchmarks/bench_first_run.py          (~4 min: demo + 2 API starts)

Not a pytest test. A temporary state folder gets `mlops demo` (ingest, three models,
a deployment); then `mlops api` is started twice as a user would start it (its own
Prefect server in the background). Once the first request is sent as soon as the API
answers ("cold"); once after the API's warm-up has finished ("warm"). Each time a
deployment and an evaluation are timed, then the same again ("next", the floor: the
same request in the same, now warm, process). Prints a markdown table; exits 0.
Options: --keep (keep the state folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import log, md_table  # noqa: E402  (after sys.path)

MLOPS = [sys.executable, "-m", "mlops"]
MODEL = "direction-model"
TARGETS = {"evaluation": 5.0}  # seconds, the plan's target for an evaluation run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code < 600
    except httpx.HTTPError:
        return False


def _warm_up_done(home: Path) -> bool:
    """The API's `api-warm-up` flow run has completed (asked of its Prefect server)."""
    for record in (home / "run").glob("prefect-server-*.json"):
        port = json.loads(record.read_text())["port"]
        try:
            runs = httpx.post(
                f"http://127.0.0.1:{port}/api/flow_runs/filter",
                json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}},
                timeout=2,
            ).json()
        except (httpx.HTTPError, ValueError):
            return False
        names = httpx.post(f"http://127.0.0.1:{port}/api/flows/filter", json={}, timeout=2).json()
        warm = {f["id"] for f in names if f["name"] == "api-warm-up"}
        return any(r["flow_id"] in warm for r in runs)
    return False


def _timed(client: httpx.Client, method: str, url: str, **kwargs: Any) -> tuple[float, int]:
    started = time.perf_counter()
    response = client.request(method, url, **kwargs)
    return time.perf_counter() - started, response.status_code


def one_start(home: Path, env: dict[str, str], warm: bool) -> dict[str, float]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    api = subprocess.Popen(
        [*MLOPS, "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: _answers(f"{base}/healthz"), 180, "the API")
        times = {"API answers": time.perf_counter() - started}
        if warm:
            _wait(lambda: _warm_up_done(home), 180, "the warm-up")
            times["warm-up done"] = time.perf_counter() - started
        token = (home / "api_token").read_text().strip()
        client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=600
        )
        versions = [
            v["version"] for v in client.get(f"/api/v1/ml/models/{MODEL}").json()["versions"]
        ]
        evaluation = {"suites": ["smoke"], "models": [{"name": MODEL, "alias": "production"}]}
        for label in ("first", "next"):
            version = versions[0] if label == "first" else versions[-1]
            seconds, status = _timed(
                client,
                "POST",
                f"/api/v1/ml/models/{MODEL}/deploy",
                params={"wait": True},
                json={"version": version, "target_stage": "staging", "reason": "bench"},
            )
            log(f"deploy {label}: {seconds:.2f} s ({status})")
            times[f"deploy {label}"] = seconds
            seconds, status = _timed(
                client, "POST", "/api/v1/evaluation/run", params={"wait": True}, json=evaluation
            )
            log(f"evaluation {label}: {seconds:.2f} s ({status})")
            times[f"evaluation {label}"] = seconds
        return times
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-first-run-")) / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLOPS_"))}
    env.update({"MLOPS_HOME": str(home), "MLOPS_DEMO_TICKERS": "20"})
    try:
        log("mlops demo (ingest, train three models, deploy the best)...")
        subprocess.run([*MLOPS, "demo"], env=env, check=True, capture_output=True)
        results = {}
        for warm in (False, True):
            log(f"mlops api, {'after its warm-up' if warm else 'at once'}")
            results["warm" if warm else "cold"] = one_start(home, env, warm)
        rows = []
        for kind in ("deploy", "evaluation"):
            for start, times in results.items():
                first, floor = times[f"{kind} first"], times[f"{kind} next"]
                target = TARGETS.get(kind)
                verdict = "" if target is None else ("ok" if first < target else "FAIL")
                rows.append(
                    [
                        kind,
                        start,
                        f"{first:.2f}",
                        f"{floor:.2f}",
                        f"{first / floor:.2f}x",
                        f"< {target:.0f} s {verdict}" if target else "",
                    ]
                )
        print("\n## First run after `mlops api` starts (staging deployment; smoke evaluation)\n")
        print(md_table(["run", "API", "first (s)", "next (s)", "first/next", "target"], rows))
        print()
        starts = [
            [start, f"{t['API answers']:.1f}", f"{t.get('warm-up done', float('nan')):.1f}"]
            for start, t in results.items()
        ]
        print(md_table(["API", "answers after (s)", "warm-up done after (s)"], starts))
    finally:
        if args.keep:
            log(f"kept {home}")
        else:
            shutil.rmtree(home.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
