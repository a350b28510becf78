"""The MLflow server `mlops up` starts, with an S3-compatible artifact destination (moto's
S3 server on loopback): artifacts and models logged through the server land in the bucket,
and a client without S3 credentials reads them back through the server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.support.ports import free_ports
from tests.support.settings import make_settings
from tests.support.waiting import wait_for

from mlops.services import _commands

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

BUCKET = "mlops-artifacts"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def _running(args: list[str], env: dict[str, str], log: Path, health: str) -> Iterator[None]:
    with open(log, "ab") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"{args[0]} exited: {log.read_text()[-3000:]}")
        try:
            return httpx.get(health, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, 120, health, interval=0.25)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_mlflow_server_keeps_artifacts_in_an_s3_compatible_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    import mlflow
    from sklearn.linear_model import LogisticRegression

    s3_port, mlflow_port = free_ports(2)
    endpoint = f"http://127.0.0.1:{s3_port}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    moto = [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1"]
    with _running([*moto, "-p", str(s3_port)], clean, tmp_path / "s3.log", endpoint):
        s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
        s3.create_bucket(Bucket=BUCKET)
        home = tmp_path / "home"
        settings = make_settings(
            home,
            mlflow_port=mlflow_port,
            mlflow_tracking_uri=f"http://127.0.0.1:{mlflow_port}",
            mlflow_database_url=f"sqlite:///{home / 'mlflow.db'}",
            mlflow_artifacts_destination=f"s3://{BUCKET}/mlartifacts",
        )
        command, health = _commands(settings)["mlflow"]
        server_env = {**clean, **S3_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": endpoint}
        with _running(command, server_env, tmp_path / "mlflow.log", health):
            for name in ("MLFLOW_S3_ENDPOINT_URL", *S3_CREDENTIALS):  # the client has none
                monkeypatch.delenv(name, raising=False)
            mlflow.set_tracking_uri(settings.tracking_uri)
            try:
                x = np.random.default_rng(3).normal(size=(60, 3))
                model = LogisticRegression().fit(x, x[:, 0] > 0)
                with mlflow.start_run() as run:
                    mlflow.log_text("logged through the server", "notes/hello.txt")
                    logged = mlflow.sklearn.log_model(model, name="model")
                loaded = mlflow.pyfunc.load_model(logged.model_uri)
                text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/notes/hello.txt")
            finally:
                mlflow.set_tracking_uri(None)

        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied by the server
        assert text == "logged through the server"
        assert (loaded.predict(x) == model.predict(x)).all()
        listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="mlartifacts/")
        keys = [item["Key"] for item in listed.get("Contents", [])]
        assert any(key.endswith(f"{run.info.run_id}/artifacts/notes/hello.txt") for key in keys)
        assert any(key.endswith("/MLmodel") for key in keys), keys
        assert not (home / "mlartifacts").exists()  # nothing on the server's disk


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    }
