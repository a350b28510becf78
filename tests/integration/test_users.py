"""Users, roles and personal tokens: every mutating endpoint names the role it needs and
refuses a lesser one with 403; tokens that are wrong, revoked, expired or of a disabled
user are refused with 401; the console signs in per user and refuses a form to a role that
may not send it; writes are recorded under the user's name."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from tests.support.console_pages import csrf, sign_in
from tests.support.settings import make_settings
from typer.testing import CliRunner

from mlops import users
from mlops.app import create_app
from mlops.cli import app as cli
from mlops.db import ApiToken, locked_scope, utcnow
from mlops.errors import AuthError, ConflictError
from mlops.roles import Role
from mlops.settings import Settings

API = "/api/v1"
MUTATING = {"post", "put", "patch", "delete"}
OPEN_POSTS = {
    # POSTs that change nothing: a prediction and checks of a template without saving it
    ("post", "/api/v1/ml/models/{name}/predict"),
    ("post", "/api/v1/prompt-governance/preview"),
    ("post", "/api/v1/prompt-governance/templates/{name}/test"),
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(tmp_path_factory.mktemp("users") / "home")


@pytest.fixture(scope="module")
def tokens(home: Settings) -> dict[Role, str]:
    """A user of each role with a token."""
    found = {}
    for role in Role:
        name = f"{role.value}-user"
        users.add_user(home, name, role, by="test")
        found[role] = users.create_token(home, name, "test").token
    return found


@pytest.fixture(scope="module")
def client(home: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(home), raise_server_exceptions=False) as test_client:
        yield test_client


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _mutating_routes(client: TestClient) -> list[tuple[str, str, Role | None]]:
    """Every mutating operation of the OpenAPI, with the role the gate reads from it."""
    from mlops.api.app import API_PREFIX, API_ROUTERS
    from mlops.api.gate import RouteTable

    table = RouteTable([(API_PREFIX, r.routes) for r in API_ROUTERS], client.app.state.settings)  # type: ignore[attr-defined]
    found = []
    for path, operations in client.get(f"{API}/openapi.json").json()["paths"].items():
        for method in operations:
            if method in MUTATING:
                concrete = re.sub(r"\{[^}]+\}", "x", path)
                found.append((method, path, table.policy(method.upper(), concrete).role))
    return found


def test_every_mutating_endpoint_names_a_role_and_refuses_the_roles_below_it(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    routes = _mutating_routes(client)
    assert len(routes) >= 20
    unruled = [(m, p) for m, p, role in routes if role is None and (m, p) not in OPEN_POSTS]
    assert unruled == [], "a mutating endpoint without a role"
    for method, path, needed in routes:
        if needed is None:
            continue
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        anonymous = client.request(method.upper(), concrete, json={})
        assert anonymous.status_code == 401, (method, path)
        for role, token in tokens.items():
            answer = client.request(method.upper(), concrete, json={}, headers=_auth(token))
            if role.allows(needed):
                assert answer.status_code not in (401, 403), (method, path, role, answer.text)
            else:
                assert answer.status_code == 403, (method, path, role, answer.text)
                error = answer.json()["error"]
                assert error["code"] == "forbidden"
                assert f"needs the {needed.value} role" in error["message"]
                assert f"{role.value}-user is a {role.value}" in error["message"]


def test_the_roles_of_the_main_actions(client: TestClient) -> None:
    """What the issue's roles say, read from the routes."""
    roles = {(m, p): r for m, p, r in _mutating_routes(client)}
    assert roles[("post", f"{API}/ingests")] is Role.RESEARCHER
    assert roles[("post", f"{API}/datasets")] is Role.RESEARCHER
    assert roles[("post", f"{API}/ml/models/{{name}}/deploy")] is Role.RESEARCHER  # staging
    assert roles[("post", f"{API}/ml/models/{{name}}/rollback")] is Role.APPROVER
    assert roles[("post", f"{API}/ml/deployments/{{deployment_id}}/rollback")] is Role.APPROVER
    assert roles[("post", f"{API}/ml/deployments/{{deployment_id}}/approve")] is Role.APPROVER
    assert roles[("post", f"{API}/ml/deployments/{{deployment_id}}/reject")] is Role.APPROVER
    assert roles[("post", f"{API}/feature-views/{{view}}/rollback")] is Role.APPROVER
    assert roles[("post", f"{API}/prompt-governance/templates")] is Role.RESEARCHER
    prompts = f"{API}/prompt-governance/templates/{{name}}"
    assert roles[("post", f"{prompts}/publish")] is Role.APPROVER
    assert roles[("post", f"{prompts}/rollback")] is Role.APPROVER
    assert roles[("post", f"{API}/users")] is Role.ADMIN
    assert roles[("post", f"{API}/tokens")] is Role.ADMIN


def test_a_researcher_may_deploy_to_staging_but_not_to_production(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    body = {"version": "1", "target_stage": "production"}
    refused = client.post(
        f"{API}/ml/models/nomodel/deploy", json=body, headers=_auth(tokens[Role.RESEARCHER])
    )
    assert refused.status_code == 403
    assert "Deploying to production needs the approver role" in refused.json()["error"]["message"]
    staging = client.post(
        f"{API}/ml/models/nomodel/deploy",
        json={**body, "target_stage": "staging"},
        headers=_auth(tokens[Role.RESEARCHER]),
    )
    assert staging.status_code == 404, staging.text  # past the role check: no such model
    approver = client.post(
        f"{API}/ml/models/nomodel/deploy", json=body, headers=_auth(tokens[Role.APPROVER])
    )
    assert approver.status_code == 404, approver.text


def test_wrong_revoked_expired_and_disabled_tokens_are_refused(
    client: TestClient, home: Settings
) -> None:
    users.add_user(home, "dana", Role.RESEARCHER, by="test")
    kept = users.create_token(home, "dana", "kept")
    revoked = users.create_token(home, "dana", "old")
    expired = users.create_token(home, "dana", "short", expires_in_days=1)
    assert client.get(f"{API}/me", headers=_auth(kept.token)).json() == {
        "name": "dana",
        "role": "researcher",
    }

    def refusal(token: str) -> str:
        answer = client.get(f"{API}/me", headers=_auth(token))
        assert answer.status_code == 401, answer.text
        return str(answer.json()["error"]["message"])

    assert refusal(kept.token + "x") == "Invalid bearer token."
    users.revoke_token(home, revoked.id)
    assert refusal(revoked.token) == "The token 'old' of dana was revoked."
    with locked_scope(home.metadata_url) as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == expired.id)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    users.forget_cached()
    assert "of dana expired at" in refusal(expired.token)
    users.set_disabled(home, "dana", True)
    assert refusal(kept.token) == "The user dana is disabled."
    users.set_disabled(home, "dana", False)
    assert client.get(f"{API}/me", headers=_auth(kept.token)).status_code == 200
    # the gate refuses before the body: a big upload with a revoked token is not read
    answer = client.post(f"{API}/ingests", content=b"x" * 10_000, headers=_auth(revoked.token))
    assert answer.status_code == 401


def test_the_state_folders_token_is_the_bootstrap_admins(
    client: TestClient, home: Settings
) -> None:
    me = client.get(f"{API}/me", headers=_auth(home.token)).json()
    assert me == {"name": users.BOOTSTRAP_ADMIN, "role": "admin"}
    listed = client.get(f"{API}/tokens", headers=_auth(home.token)).json()
    bootstrap = [t for t in listed if t["name"] == users.BOOTSTRAP_TOKEN]
    assert len(bootstrap) == 1 and bootstrap[0]["user"] == "admin"
    assert all("token" not in t for t in listed)  # never shown again


def test_a_new_state_folder_token_revokes_the_previous_bootstrap_token(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    assert users.resolve(settings, settings.token).name == users.BOOTSTRAP_ADMIN
    rotated = make_settings(tmp_path / "home", api_token="a-new-admin-token-" + "x" * 20)
    assert users.resolve(rotated, rotated.token).role is Role.ADMIN
    users.forget_cached()
    with pytest.raises(AuthError, match="was revoked"):
        users.resolve(settings, settings.token)


def test_admins_manage_users_and_tokens_through_the_api(
    client: TestClient, home: Settings, tokens: dict[Role, str]
) -> None:
    admin = _auth(tokens[Role.ADMIN])
    created = client.post(f"{API}/users", json={"name": "erin", "role": "viewer"}, headers=admin)
    assert created.status_code == 201, created.text
    again = client.post(f"{API}/users", json={"name": "erin", "role": "viewer"}, headers=admin)
    assert again.status_code == 409
    bad = client.post(f"{API}/users", json={"name": "Erin X", "role": "viewer"}, headers=admin)
    assert bad.status_code == 422 and "user name" in bad.json()["error"]["message"]
    forever = {"user": "erin", "expires_in_days": 10**9}
    assert client.post(f"{API}/tokens", json=forever, headers=admin).status_code == 422
    token = client.post(f"{API}/tokens", json={"user": "erin", "name": "nb"}, headers=admin)
    assert token.status_code == 201
    erin = _auth(token.json()["token"])
    assert client.get(f"{API}/me", headers=erin).json()["role"] == "viewer"
    assert client.post(f"{API}/datasets", json={}, headers=erin).status_code == 403
    promoted = client.patch(f"{API}/users/erin", json={"role": "researcher"}, headers=admin)
    assert promoted.json()["role"] == "researcher"
    assert client.post(f"{API}/datasets", json={}, headers=erin).status_code == 422  # allowed
    own = client.get(f"{API}/tokens", params={"user": "admin-user"}, headers=admin).json()
    assert client.delete(f"{API}/tokens/{own[0]['id']}", headers=admin).status_code == 409
    revoked = client.delete(f"{API}/tokens/{token.json()['id']}", headers=admin)
    assert revoked.json()["state"] == "revoked"
    assert client.get(f"{API}/me", headers=erin).status_code == 401


def test_the_last_admin_cannot_be_demoted_or_disabled(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    users.add_user(settings, "root", Role.ADMIN, by="test")
    with pytest.raises(ConflictError, match="last enabled admin"):
        users.set_role(settings, "root", Role.VIEWER)
    with pytest.raises(ConflictError, match="last enabled admin"):
        users.set_disabled(settings, "root", True)
    users.add_user(settings, "second", Role.ADMIN, by="test")
    assert users.set_role(settings, "root", Role.VIEWER).role is Role.VIEWER


def test_the_console_signs_in_per_user_and_refuses_a_form_the_role_may_not_send(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    page = "/features/views/daily_technicals"  # the form posts there; the view need not exist
    settings = client.app.state.settings  # type: ignore[attr-defined]
    sign_in(client, settings, "/experiments", tokens[Role.VIEWER])
    assert "Signed in as <strong>viewer-user</strong> (viewer)" in client.get("/experiments").text
    for form, action in (
        ("/datasets", "Creating a dataset"),
        ("/experiments", "Creating an experiment"),
    ):
        refused = client.post(form, data={"csrf": csrf(client, "/experiments"), "name": "d1"})
        assert refused.status_code == 403
        assert f"{action} needs the researcher role; viewer-user is a viewer" in refused.text
    sign_in(client, settings, "/experiments", tokens[Role.RESEARCHER])
    token = csrf(client, "/experiments")
    rollback = client.post(f"{page}/rollback", data={"csrf": token, "version": "1"})
    assert rollback.status_code == 403
    assert "Rolling back a feature view needs the approver role" in rollback.text
    bad = client.post("/signin", data={"token": "nope", "next": "/"}, follow_redirects=False)
    assert bad.status_code == 401 and "Invalid bearer token." in bad.text


def test_mlops_users_and_tokens_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_PROFILE", "local")
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    run("users", "add", "frank", "approver", "--email", "frank@example.com")
    assert json.loads(run("users", "list", "--json"))[0]["role"] == "approver"
    created = json.loads(run("tokens", "create", "frank", "--name", "laptop", "--json"))
    assert created["token"].startswith(users.TOKEN_PREFIX)
    listed = json.loads(run("tokens", "list", "frank", "--json"))
    assert [(t["name"], t["state"]) for t in listed] == [("laptop", "active")]
    assert created["token"] not in run("tokens", "list")
    run("tokens", "revoke", str(created["id"]))
    assert json.loads(run("tokens", "list", "frank", "--json"))[0]["state"] == "revoked"
    taken = runner.invoke(cli, ["users", "add", "frank", "viewer"])
    assert taken.exit_code == 5 and "exists already" in taken.output
    unknown = runner.invoke(cli, ["users", "set-role", "nobody", "viewer"])
    assert unknown.exit_code == 4
    bad_role = runner.invoke(cli, ["users", "add", "gina", "boss"])
    assert bad_role.exit_code == 2
    for name in ("bootstrap", "x" * 101):  # the state folder's token's name; too long
        refused = runner.invoke(cli, ["tokens", "create", "frank", "--name", name])
        assert refused.exit_code == 2 and "Invalid token name" in refused.output


def test_a_trusted_proxy_names_the_user_and_only_a_trusted_proxy(
    home: Settings, tokens: dict[Role, str]
) -> None:
    """Behind an SSO proxy (MLOPS_TRUSTED_PROXY_HEADER from MLOPS_TRUSTED_PROXIES): the
    header names the caller of the API and the console's user; from any other address it is
    ignored; an unknown user is refused."""
    proxied = home.model_copy(
        update={"trusted_proxy_header": "X-Forwarded-User", "trusted_proxies": ["10.0.0.0/24"]}
    )
    who = {"X-Forwarded-User": "researcher-user"}
    app = create_app(proxied)
    with TestClient(app, raise_server_exceptions=False, client=("10.0.0.7", 4000)) as proxy:
        me = proxy.get(f"{API}/me", headers=who)
        assert me.status_code == 200 and me.json() == {
            "name": "researcher-user",
            "role": "researcher",
        }
        production = proxy.post(
            f"{API}/ml/models/nomodel/deploy",
            json={"version": "1"},
            headers={**who, "X-Requested-With": "script"},
        )
        assert production.status_code == 403 and "needs the approver role" in production.text
        body = {"name": "proxied", "template": "Hi there", "metadata": {}, "message": "m"}
        forged = proxy.post(f"{API}/prompt-governance/templates", json=body, headers=who)
        assert forged.status_code == 401 and "X-Requested-With" in forged.text  # CSRF
        written = {**who, "X-Requested-With": "script"}
        created = proxy.post(f"{API}/prompt-governance/templates", json=body, headers=written)
        assert created.status_code == 201, created.text
        versions = proxy.get(f"{API}/prompt-governance/templates/proxied/versions").json()
        assert versions[0]["committer"] == "researcher-user"  # the write names the user
        unknown = proxy.get(f"{API}/me", headers={"X-Forwarded-User": "mallory"})
        assert unknown.status_code == 401 and "does not know" in unknown.text
        token_wins = proxy.get(f"{API}/me", headers={**who, **_auth(tokens[Role.ADMIN])})
        assert token_wins.json()["name"] == "admin-user"
        page = proxy.get("/models", headers=who).text
        assert "Signed in as <strong>researcher-user</strong> (researcher)" in page
    with TestClient(app, raise_server_exceptions=False, client=("10.0.1.7", 4000)) as other:
        ignored = other.get(f"{API}/me", headers=who)
        assert ignored.status_code == 401 and "needs a bearer token" in ignored.text
        assert "Signed in as" not in other.get("/models", headers=who).text
    with pytest.raises(Exception, match="not an address or network"):
        Settings(home=home.home, trusted_proxies=["ten.0.0.1"])


CONSOLE_FORMS = {
    # every POST of the console and the role its form needs (the sign-in forms and the
    # editor's preview, which saves nothing, are open)
    "/evaluation/run": Role.RESEARCHER,
    "/datasets": Role.RESEARCHER,
    "/experiments": Role.RESEARCHER,
    "/models/{name}/deploy": Role.RESEARCHER,
    "/prompts/_new": Role.RESEARCHER,
    "/prompts/{name}/edit": Role.RESEARCHER,
    "/features/views/{view}/rollback": Role.APPROVER,
    "/models/{name}/rollback": Role.APPROVER,
    "/models/{name}/acknowledge": Role.APPROVER,
    "/deployments/{deployment_id}/rollback": Role.APPROVER,
    "/deployments/{deployment_id}/approve": Role.APPROVER,
    "/deployments/{deployment_id}/reject": Role.APPROVER,
    "/prompts/{name}/publish": Role.APPROVER,
    "/prompts/{name}/rollback": Role.APPROVER,
    "/prompts/publications/{request_id}/approve": Role.APPROVER,
    "/prompts/publications/{request_id}/reject": Role.APPROVER,
    "/prompts/{name}/acknowledge": Role.APPROVER,
}
OPEN_FORMS = {"/signin", "/signout", "/prompts/_preview"}


def test_every_console_form_names_a_role_and_refuses_the_roles_below_it(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    """Walks the console's routes: a new form without a rule here fails; each refuses a
    session without sign-in (401) and every role below its own (403 naming it)."""
    from mlops.web.console import SECTIONS

    posts = {r.path for s in SECTIONS for r in s.routes if "POST" in getattr(r, "methods", ())}
    assert posts - OPEN_FORMS == set(CONSOLE_FORMS), "a console form without a role"
    settings = client.app.state.settings  # type: ignore[attr-defined]
    client.cookies.clear()
    for path in CONSOLE_FORMS:
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        assert client.post(concrete, data={"csrf": "none"}).status_code == 401, path
    for role in (Role.VIEWER, Role.RESEARCHER):
        sign_in(client, settings, "/experiments", tokens[role])
        token = csrf(client, "/experiments")
        for path, needed in CONSOLE_FORMS.items():
            if role.allows(needed):
                continue
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            refused = client.post(concrete, data={"csrf": token, "comment": "c", "version": "1"})
            assert refused.status_code == 403, (path, role, refused.text[:300])
            assert f"needs the {needed.value} role" in refused.text, (path, role)
    client.cookies.clear()
