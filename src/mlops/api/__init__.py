"""The REST API (FastAPI): routers per area, the request gate, JSON errors (`mlops.app`
adds the web console to the same app)."""
