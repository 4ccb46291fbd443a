"""The studio's defences in a real browser: hostile file contents show as text, a form on
another site cannot change anything, and with a key nothing works before logging in."""

from __future__ import annotations

import http.server
import re
import threading

import orjson
import pytest

from studio_browser import browser_page, require_browser, screenshot_dir, shoot, upload_source

PAYLOADS = [
    "<script>document.title='pwned-by-script'</script>",
    '"><img src=x onerror="document.title=\'pwned-by-img\'">',
]


SHOWN_IMG = "<img src=x onerror="


@pytest.fixture
def hostile_file(tmp_path):
    path = tmp_path / "hostile.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"{p} question {i}"},
                {"role": "assistant", "content": f"{p} answer {i}"},
            ]
        }
        for i in range(10)
        for p in PAYLOADS
    ]
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    return path


@pytest.fixture
def other_site(tmp_path):
    """A page on another origin whose form posts to the studio (a cross-site request)."""
    pages = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield pages, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_hostile_file_contents_show_as_text(tmp_path, start_server, hostile_file):
    require_browser()
    server = start_server(tmp_path / "home")
    with browser_page(server.url.removesuffix("/v1")) as page:
        upload_source(page, hostile_file)
        # The preview shows the raw JSON lines: the quotes of the payload come escaped (\").
        preview = page.locator("#preview").inner_text()
        assert PAYLOADS[0] in preview and SHOWN_IMG in preview
        page.select_option("select[name=model]", "gpt-4o-mini-2024-07-18")
        page.locator("#run-format").click()
        page.wait_for_url(re.compile(r"/data/datasets/"))
        assert SHOWN_IMG in page.locator("#train-rows").inner_text()
        assert page.locator("main img").count() == 0
        assert "pwned" not in page.title()
        shoot(page, tmp_path, "hostile")


def test_a_form_on_another_site_cannot_change_anything(tmp_path, start_server, other_site):
    require_browser()
    server = start_server(tmp_path / "home", "--data-dir", str(tmp_path))
    (tmp_path / "data.tsv").write_text("text\tlabel\na\tx\nb\ty\n")
    studio = server.url.removesuffix("/v1")
    pages, origin = other_site
    pages["/"] = (
        f'<form method="post" action="{studio}/data/open"><input name="path" '
        'value="data.tsv"><button id="go">go</button></form>'
    )
    with browser_page(origin) as page:
        page.goto(f"{origin}/")
        with page.expect_response(re.compile(r"/data/open$")) as answer:
            page.locator("#go").click()
        assert answer.value.status == 403
        page.goto(f"{studio}/data")
        assert page.locator("text=data.tsv").count() == 1  # only the data directory's listing
        assert "/data/sources/" not in page.content()


def test_with_a_key_nothing_works_before_logging_in(tmp_path, start_server):
    require_browser()
    server = start_server(tmp_path / "home", "--api-key", "sesame-1234")
    with browser_page(server.url.removesuffix("/v1")) as page:
        for path in ("/data", "/jobs", "/chat", "/evals", "/models"):
            page.goto(path)
            assert re.search(r"/login\?next=", page.url), path
        refused = page.request.post("/data/open", form={"path": "x"})
        assert refused.status == 401
        shoot(page, screenshot_dir(tmp_path), "login")
        page.fill("input[name=api_key]", "wrong")
        page.get_by_role("button", name="Log in").click()
        assert page.get_by_text("not this server's API key").is_visible()
        page.fill("input[name=api_key]", "sesame-1234")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(r"/models$"))
        cookies = page.context.cookies()
        assert [(c["httpOnly"], c["sameSite"]) for c in cookies] == [(True, "Strict")]
        assert all("sesame" not in c["value"] for c in cookies)
        page.goto("/jobs")
        assert page.url.endswith("/jobs")
