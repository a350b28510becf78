from mlops.cli import app

app()
