"""The web console in a real browser: Debian's Chromium driven by Playwright against the
platform's app served by uvicorn. Each journey saves a screenshot of its final page under
`test-artifacts/` (or `$MLOPS_TEST_ARTIFACTS`)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect
from tests.support.browser import launch_chromium
from tests.support.registered_models import add_version, copy_version
from tests.support.waiting import wait_for

from mlops.app import create_app
from mlops.settings import Settings

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("MLOPS_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(lifecycle: dict[str, Any]) -> Iterator[tuple[str, Settings]]:
    """The platform's app (API and console) on a free port, as `mlops api` serves it."""
    import uvicorn

    settings: Settings = lifecycle["settings"]
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="console-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", settings
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


def _sign_in(page: Any, base: str, settings: Settings, then: str) -> None:
    page.goto(f"{base}/signin?next={then}")
    page.get_by_label("API token").fill(settings.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}{then}")


def _until_finished(page: Any, timeout: float = 180) -> str:
    """The results page reloads itself every 2 s while the run goes on: wait for the last
    version of it, the one without the running notice."""
    deadline = time.monotonic() + timeout
    while True:
        page.wait_for_load_state()
        if page.locator(".loading").count() == 0:
            return str(page.content())
        assert time.monotonic() < deadline, "the evaluation did not finish"
        page.wait_for_timeout(500)


def test_home_shows_every_component_and_recent_activity(
    page: Any, served: tuple[str, Settings]
) -> None:
    base, _ = served
    page.goto(base)
    assert page.get_by_role("heading", name="Platform health").is_visible()
    rows = page.locator("table.grid tbody tr")
    assert rows.count() >= 4
    assert page.get_by_role("heading", name="Recent activity").is_visible()
    assert page.get_by_role("link", name="Evaluation").is_visible()


def test_run_an_evaluation_suite_and_read_pass_fail_and_the_comparison(
    page: Any, served: tuple[str, Settings]
) -> None:
    base, settings = served
    name = copy_version(settings, "1")
    add_version(settings, name, "2")
    page.goto(f"{base}/evaluation")
    assert page.get_by_text("to run suites").is_visible()  # read-only until signed in
    assert page.get_by_role("button", name="Run").count() == 0

    _sign_in(page, base, settings, "/evaluation")
    page.get_by_label("run smoke").check()
    page.locator(f'input[value="{name}:1"]').check()
    page.locator(f'input[value="{name}:2"]').check()
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(f"{base}/evaluation/results/*")
    _until_finished(page)

    marks = page.locator("td.mark >> visible=true")  # the summary; details are folded
    expect(marks).to_have_count(6)  # 3 tests x 2 versions (waits while the page reloads)
    texts = {marks.nth(i).inner_text() for i in range(marks.count())}
    assert texts <= {"✓ Pass", "✗ Fail", "! Error"} and texts
    assert page.get_by_role("heading", name="Comparison").is_visible()
    assert page.locator("svg.chart rect.bar.best").count() >= 7
    assert page.get_by_role("heading", name="Explainability").is_visible()
    assert page.get_by_text("Top drivers of P(up)").first.is_visible()


def test_a_rejected_run_shows_its_error_inline(page: Any, served: tuple[str, Settings]) -> None:
    base, settings = served
    _sign_in(page, base, settings, "/evaluation")
    page.get_by_role("button", name="Run").click()  # nothing ticked
    alert = page.get_by_role("alert")
    assert alert.inner_text() == "Tick at least one suite and one model version."


def _until_deployed(page: Any, settings: Settings, timeout: float = 180) -> None:
    """Until the deployment the page shows has finished (as its record says), then the page
    as it shows it then. While it runs, the page reloads itself every 2 s; a check of the
    page alone could land between two loads and see neither."""
    from mlops.lifecycle.deployments import get_deployment

    deployment_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    wait_for(
        lambda: get_deployment(settings, deployment_id).finished_at is not None,
        timeout,
        f"deployment {deployment_id} to finish",
    )

    wait_for(
        lambda: _reloaded_without_refresh(page),
        30,
        "the finished deployment's page to stop reloading itself",
    )


def test_create_an_experiment_and_deploy_a_model_to_production(
    page: Any, served: tuple[str, Settings]
) -> None:
    import uuid

    base, settings = served
    name = copy_version(settings, "1")
    _sign_in(page, base, settings, "/experiments")
    experiment = f"browser-{uuid.uuid4().hex[:8]}"
    page.get_by_label("Name", exact=True).fill(experiment)
    page.get_by_role("button", name="Create experiment").click()
    page.wait_for_url(f"{base}/experiments/*")
    assert page.get_by_role("heading", name=experiment).is_visible()

    page.goto(f"{base}/models/{name}")
    card = page.locator("form.deploy-form")
    card.get_by_label("Version").select_option("1")
    card.get_by_label("Target stage").select_option("production")
    card.get_by_role("button", name="Deploy").click()
    page.wait_for_url(f"{base}/deployments/*")
    _until_deployed(page, settings)
    steps = page.locator("ol.stepper li.step")
    assert [steps.nth(i).get_attribute("class") for i in range(3)] == ["step passed"] * 3
    assert page.get_by_role("status").inner_text() == f"{name} v1 is now in production."


def test_a_failed_gate_shows_which_gate_and_why(page: Any, served: tuple[str, Settings]) -> None:
    from tests.support.registered_models import logged_model

    base, settings = served
    misfit = logged_model(settings, columns=["ret_1d", "not_served"])
    _sign_in(page, base, settings, f"/models/{misfit}")
    page.locator("form.deploy-form").get_by_role("button", name="Deploy").click()
    page.wait_for_url(f"{base}/deployments/*")
    _until_deployed(page, settings)
    failure = page.locator(".failure")
    assert "Failed at the validate stage" in failure.inner_text()
    assert "signature" in failure.inner_text() and "not_served" in failure.inner_text()


def test_a_deploy_without_the_token_is_refused(page: Any, served: tuple[str, Settings]) -> None:
    base, settings = served
    name = copy_version(settings, "1")
    page.goto(f"{base}/models/{name}")
    assert page.get_by_role("button", name="Deploy").count() == 0
    assert page.get_by_text("Sign in to deploy").first.is_visible()
    response = page.request.post(
        f"{base}/models/{name}/deploy", form={"version": "1", "target_stage": "production"}
    )
    assert response.status == 401


def test_look_up_a_feature_and_its_statistics(page: Any, served: tuple[str, Settings]) -> None:
    base, _ = served
    page.goto(f"{base}/features")
    page.get_by_label("Search").fill("rsi")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name="rsi_14").first.click()
    assert page.get_by_role("heading", name="Statistics").is_visible()
    stats = page.locator("section", has=page.get_by_role("heading", name="Statistics"))
    assert "mean" in stats.inner_text() and "p99" in stats.inner_text()
    assert page.locator("svg.chart").count() >= 1  # the histogram
    assert page.get_by_role("heading", name="Sample rows").is_visible()


def test_edit_a_prompt_preview_publish_and_find_it_in_the_history(
    page: Any, served: tuple[str, Settings]
) -> None:
    import uuid

    from mlops.prompts.store import open_store

    base, settings = served
    name = f"greet_{uuid.uuid4().hex[:6]}"
    meta = "description: greeting\nowner: desk\nvariables:\n  who:\n    type: string\n"
    open_store(settings).create(name, "Hello {{ who }}\n", meta, "tester", "tests", "first")
    _sign_in(page, base, settings, f"/prompts/{name}/edit")
    page.get_by_label("Template (Jinja2)").fill("Good morning {{ who }}, from the browser.\n")
    page.get_by_label("who").fill("desk")
    page.get_by_role("button", name="Preview").click()
    assert (
        page.locator("#prompt-preview")
        .inner_text()
        .strip()
        .startswith("Good morning desk, from the browser.")
    )
    page.get_by_label("Commit message").fill("browser edit")
    page.get_by_role("button", name="Commit new version").click()
    page.wait_for_url(f"{base}/prompts/{name}*")
    page.get_by_role("button", name="Publish").click()
    page.wait_for_url(f"{base}/prompts/{name}*")
    page.goto(f"{base}/prompts/{name}/history")
    newest = page.locator("table.grid tbody tr").first.inner_text()
    assert "browser edit" in newest and "v2" in newest and "live" in newest


def test_a_rejected_template_shows_its_error_inline(
    page: Any, served: tuple[str, Settings]
) -> None:
    base, settings = served
    _sign_in(page, base, settings, "/prompts/risk_report/edit")
    page.get_by_label("Template (Jinja2)").fill("line one\n{% if %}\n")
    page.get_by_role("button", name="Commit new version").click()
    error = page.locator("#form-error")
    assert error.is_visible() and "Not committed — line 2" in error.inner_text()


@pytest.mark.parametrize(
    "path", ["/", "/features", "/experiments", "/models", "/evaluation", "/prompts"]
)
def test_pages_fit_a_narrow_screen(browser: Any, served: tuple[str, Settings], path: str) -> None:
    """At phone width the page does not scroll sideways: wide tables scroll in their box,
    long names (an ingest's source path) break."""
    base, settings = served
    if path == "/":
        from mlops.features import ingest

        long_source = "/data/" + "a_vendor_folder_with_a_long_name/" * 4 + "bars.csv"
        run_id = ingest.start_run(settings, long_source)
        ingest.finish_run(settings, run_id, "failed", error="a long source in the list")
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(base + path)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"narrow{path.replace('/', '_') or '_home'}.png"))
    context.close()
    assert overflow <= 0, f"{path} is {overflow} px wider than the screen"


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(e => e.type !== 'hidden' && e.offsetParent !== null)
  .filter(e => e.tagName === 'BUTTON'
      ? !(e.innerText.trim() || e.getAttribute('aria-label'))
      : !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML.slice(0, 120))"""


@pytest.mark.parametrize(
    "path",
    ["/", "/features", "/datasets", "/experiments", "/models", "/evaluation", "/prompts",
     "/prompts/market_summary/edit"],
)  # fmt: skip
def test_every_control_has_a_label_and_the_keyboard_reaches_it(
    browser: Any, served: tuple[str, Settings], path: str
) -> None:
    base, settings = served
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    _sign_in(page, base, settings, path)
    assert page.evaluate(UNLABELLED) == []
    page.keyboard.press("Tab")  # the first stop is a link or control, not the body
    assert page.evaluate("document.activeElement.tagName") in ("A", "BUTTON", "INPUT")
    context.close()


@pytest.fixture(scope="module")
def approving(
    served: tuple[str, Settings], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Settings, dict[str, str]]]:
    """The same platform served again with gates that ask one approval before production,
    and a user of each role with a token."""
    import shutil
    import uuid

    import uvicorn

    from mlops import users
    from mlops.roles import Role

    _, settings = served
    config_dir = tmp_path_factory.mktemp("approving") / "config"
    shutil.copytree(settings.config_dir, config_dir)
    gates = config_dir / "gates.yaml"
    gates.write_text(gates.read_text().replace("default:\n", "default:\n  approvals: 1\n", 1))
    approving = settings.model_copy(update={"config_dir": config_dir})
    suffix = uuid.uuid4().hex[:6]
    tokens = {}
    for role in Role:
        name = f"{role.value}-{suffix}"
        users.add_user(approving, name, role, by="test")
        tokens[role.value] = users.create_token(approving, name, "browser").token
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(approving), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="approving-server", daemon=True)
    thread.start()
    wait_for(lambda: server.started, 60, "the second server to start")
    yield f"http://127.0.0.1:{port}", approving, tokens
    server.should_exit = True
    thread.join(30)


def _sign_in_as(page: Any, base: str, token: str, then: str) -> None:
    page.goto(f"{base}/signin?next={then}")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}{then}")


def test_each_role_gets_its_forms_and_a_second_approver_lets_production_move(
    browser: Any, approving: tuple[str, Settings, dict[str, str]]
) -> None:
    """A viewer sees no Deploy button, a researcher may deploy to staging only, an approver's
    production deployment waits for another approver, who approves it in their own session,
    with a comment; production then moves."""
    base, settings, tokens = approving
    name = copy_version(settings, "1")
    model = f"/models/{name}"
    sessions = {
        role: browser.new_context(viewport={"width": 1280, "height": 900}) for role in tokens
    }
    pages = {role: context.new_page() for role, context in sessions.items()}
    try:
        viewer = pages["viewer"]
        _sign_in_as(viewer, base, tokens["viewer"], model)
        assert viewer.get_by_role("button", name="Deploy").count() == 0
        assert viewer.get_by_text("Deploying needs the researcher role").is_visible()

        researcher = pages["researcher"]
        _sign_in_as(researcher, base, tokens["researcher"], model)
        targets = researcher.locator("form.deploy-form select[name=target_stage] option")
        assert [targets.nth(i).get_attribute("value") for i in range(targets.count())] == [
            "staging"
        ]
        assert researcher.get_by_role("button", name="Roll back production…").count() == 0

        requester = pages["approver"]
        _sign_in_as(requester, base, tokens["approver"], model)
        form = requester.locator("form.deploy-form")
        form.get_by_label("Target stage").select_option("production")
        form.get_by_role("button", name="Deploy").click()
        requester.wait_for_url(f"{base}/deployments/*")
        deployment = requester.url.removeprefix(base)
        _until_settled(requester, settings)
        assert "Awaiting approval: 0 of 1" in requester.get_by_role("status").first.inner_text()
        assert requester.get_by_role("button", name="Approve").count() == 0  # their own
        assert requester.get_by_role("button", name="Withdraw (reject)").is_visible()

        approver = pages["admin"]
        _sign_in_as(approver, base, tokens["admin"], deployment)
        approver.get_by_label("Comment (required)").fill("holdout checked")
        approver.get_by_role("button", name="Approve").click()
        approver.wait_for_url(f"{base}{deployment}")
        _until_deployed(approver, settings)
        steps = approver.locator("ol.stepper li.step")
        assert [steps.nth(i).get_attribute("class") for i in range(4)] == ["step passed"] * 4
        assert approver.locator("table.approvals").inner_text().count("holdout checked") == 1
        assert (
            f"{name} v1 is now in production." in approver.get_by_role("status").first.inner_text()
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        approver.screenshot(
            path=str(ARTIFACTS / "approval-by-a-second-approver.png"), full_page=True
        )
    finally:
        for context in sessions.values():
            context.close()


def _until_settled(page: Any, settings: Settings, timeout: float = 180) -> None:
    """Until the deployment the page shows stops running (awaiting approval or ended), then
    reload it."""
    from mlops.lifecycle.deployments import get_deployment

    deployment_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    wait_for(
        lambda: get_deployment(settings, deployment_id).status not in ("pending", "running"),
        timeout,
        f"deployment {deployment_id} to settle",
    )
    wait_for(lambda: _reloaded_without_refresh(page), 30, "the page to stop reloading itself")


def _reloaded_without_refresh(page: Any) -> bool:
    """A load of the page that no longer reloads itself. The page's own refresh may
    navigate at the moment this reload does (then Chromium aborts one of them)."""
    try:
        page.reload()
        page.wait_for_load_state()
    except PlaywrightError:
        return False
    return page.locator('meta[http-equiv="refresh"]').count() == 0
