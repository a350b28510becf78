"""The web console: server-rendered pages (Jinja2) served by the platform's app under `/`,
with server-side SVG charts and vendored static files, so it works offline."""
