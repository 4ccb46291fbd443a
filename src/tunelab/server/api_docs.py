"""`/docs`: the API reference as one plain HTML page rendered from the OpenAPI schema.

FastAPI's Swagger UI and ReDoc pages load their JavaScript from a CDN, which an offline
machine cannot reach; this page needs nothing but the server.
"""

from __future__ import annotations

from tunelab.html_blocks import escape

METHODS = ("get", "post", "put", "patch", "delete")
STYLE = (
    "body{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
    "h2{margin-top:2em;border-bottom:1px solid #ddd}code{background:#f4f4f4;padding:0 .2em}"
    ".m{display:inline-block;width:4.5em;font-weight:bold}.get{color:#1a7f37}"
    ".post{color:#0969da}.delete{color:#cf222e}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left;font-size:90%}"
)


def render_api_reference(schema: dict) -> str:
    """Every route of `schema`: method, path, summary, parameters and request body."""
    info = schema.get("info", {})
    title = f"{info.get('title', 'API')} {info.get('version', '')} API reference"
    sections = []
    for tag, operations in _by_tag(schema).items():
        sections.append(f"<h2>{escape(tag)}</h2>" + "".join(_operation(*op) for op in operations))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>"
        "<p>OpenAI-compatible routes under <code>/v1</code>; the machine-readable schema is "
        "<a href='/v1/openapi.json'><code>/v1/openapi.json</code></a>.</p>"
        + "".join(sections)
        + "</body></html>"
    )


def _by_tag(schema: dict) -> dict[str, list[tuple[str, str, dict]]]:
    grouped: dict[str, list[tuple[str, str, dict]]] = {}
    for path, item in sorted(schema.get("paths", {}).items()):
        for method in METHODS:
            operation = item.get(method)
            if operation is not None:
                tag = (
                    operation.get("tags")
                    or [path.split("/")[2] if path.count("/") > 1 else "other"]
                )[0]
                grouped.setdefault(tag, []).append((method, path, operation))
    return grouped


def _operation(method: str, path: str, operation: dict) -> str:
    summary = operation.get("summary") or operation.get("operationId", "")
    text = f"<h3><span class='m {method}'>{method.upper()}</span><code>{escape(path)}</code></h3>"
    text += f"<p>{escape(summary)}</p>"
    description = operation.get("description")
    if description and description != summary:
        text += f"<p>{escape(description)}</p>"
    parameters = operation.get("parameters") or []
    if parameters:
        rows = "".join(
            f"<tr><td><code>{escape(p.get('name'))}</code></td><td>{escape(p.get('in'))}</td>"
            f"<td>{'yes' if p.get('required') else 'no'}</td>"
            f"<td>{escape((p.get('schema') or {}).get('type', ''))}</td></tr>"
            for p in parameters
        )
        text += (
            "<table><tr><th>parameter</th><th>in</th><th>required</th><th>type</th></tr>"
            f"{rows}</table>"
        )
    body = (operation.get("requestBody") or {}).get("content") or {}
    if body:
        kinds = ", ".join(escape(kind) for kind in body)
        text += f"<p>Request body: {kinds}</p>"
    return text
