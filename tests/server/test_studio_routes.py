"""The studio's routes through FastAPI's TestClient: pages, the data flow, escaping, the
login with an API key, and no state change on GET. The browser tests drive the same pages
in Chromium (test_studio_flow.py, test_studio_security.py).
"""

from __future__ import annotations

import re

import orjson
from fastapi.testclient import TestClient

from jobtools import wait_until
from tunelab.evals import runs
from tunelab.providers.local import jobs as local
from tunelab.registry import Store
from tunelab.samples import sample_path
from tunelab.server.app import ServerConfig, create_app

PAGES = ("/data", "/jobs", "/jobs/new", "/chat", "/evals", "/evals/new", "/models")
HOSTILE = ['<script>alert("x")</script>', '"><img src=x onerror=alert(1)>']


def client(**config) -> TestClient:
    app = create_app(ServerConfig(start_worker=False, **config))
    return TestClient(app, base_url="http://localhost")


def hostile_chat_file(path):
    lines = [
        {
            "messages": [
                {"role": "user", "content": f"{text} question {i}"},
                {"role": "assistant", "content": f"{text} answer {i}"},
            ]
        }
        for i in range(12)
        for text in HOSTILE
    ]
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    return path


def upload(c: TestClient, path, name: str | None = None) -> str:
    response = c.post(
        "/data/upload",
        files={"file": (name or path.name, path.read_bytes())},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return response.headers["location"]


def format_source(c: TestClient, source_url: str, **fields) -> str:
    # gpt-4o-mini: its tokenizer ships with quicktok (no model conversion in unit tests).
    fields = {"kind": "auto", "model": "gpt-4o-mini", **fields}
    response = c.post(f"{source_url}/format", data=fields, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"]


def test_every_page_renders_with_a_policy_that_forbids_inline_script():
    with client() as c:
        for path in PAGES:
            response = c.get(path)
            assert response.status_code == 200, path
            policy = response.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
            assert "<script>" not in response.text  # only <script src=...>
            assert not re.search(r"<[^>]+\son[a-z]+=", response.text), path  # no handlers
        assert c.get("/", follow_redirects=False).headers["location"] == "/data"
        assert c.get("/static/htmx.min.js").status_code == 200
        assert c.get("/v1/models").status_code == 200  # the API is still there


def test_trec_sample_is_formatted_registered_and_analysed():
    with client() as c:
        source = upload(c, sample_path("trec"))
        assert 'id="detected-kind">classification<' in c.get(source).text
        page = c.get(format_source(c, source)).text
        n_train = int(re.search(r'id="n-train">([\d,]+)<', page).group(1).replace(",", ""))
        assert n_train > 400
        assert re.search(r'id="findings-summary">0 errors, 0 warnings', page)
        assert page.count("<tr><td>together</td>") >= 2  # billed cost per provider
        assert "<svg" in page  # the histograms
        report = c.get(re.search(r'href="(/data/datasets/[^"]+/report.html)"', page).group(1))
        assert "<svg" in report.text and "sandbox" in report.headers["content-security-policy"]
    with Store() as store:
        names = {
            f.filename if hasattr(f, "filename") else f["filename"]
            for f in store.list_files(provider="local")
        }
    assert {"trec_sample_train.jsonl", "trec_sample_val.jsonl"} <= names


def test_short_prompts_leave_the_categories_out_and_keep_the_label_set():
    from tunelab.server.ui import workspace

    with client() as c:
        source = upload(c, sample_path("trec"))
        dataset_url = format_source(c, source, short_template="1")
    directory = workspace.studio_dir() / "datasets" / dataset_url.rsplit("/", 1)[1]
    first = orjson.loads((directory / "trec_sample_train.jsonl").read_bytes().splitlines()[0])
    assert "<categories>" not in first["messages"][1]["content"]
    kept = orjson.loads((directory / "trec_sample_val.labels.json").read_bytes())
    assert kept["labels"] == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


def test_file_contents_and_names_are_shown_as_text(tmp_path):
    with client() as c:
        source = upload(c, hostile_chat_file(tmp_path / "hostile.jsonl"), '"><img src=x>.jsonl')
        pages = [c.get(source).text, c.get(format_source(c, source)).text, c.get("/data").text]
        for page in pages:
            assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert" in pages[0] and "&lt;img src=x onerror" in pages[1]


def test_validation_findings_carry_line_numbers(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    twice = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
        ]
    }
    bad.write_bytes(b"\n".join(orjson.dumps(r) for r in [good, twice, good]) + b"\n")
    with client() as c:
        page = c.get(format_source(c, upload(c, bad), kind="chat", train_ratio="1.0")).text
    row = re.search(r"<tr class=\"warning\">(.*?)</tr>", page, re.DOTALL).group(1)
    assert "consecutive_same_role" in row and '<td class="num">2</td>' in row


def test_data_directory_paths_cannot_leave_it(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "trec.tsv").write_bytes(sample_path("trec").read_bytes())
    (tmp_path / "secret.txt").write_text("not yours")
    with client(data_dir=data_dir) as c:
        assert "trec.tsv" in c.get("/data").text
        opened = c.post("/data/open", data={"path": "trec.tsv"}, follow_redirects=False)
        assert opened.status_code == 303
        refused = c.post("/data/open", data={"path": "../secret.txt"})
        assert refused.status_code == 400 and "not inside the data directory" in refused.text


def test_a_post_from_another_site_is_refused():
    with client() as c:
        for path in ("/data/open", "/jobs", "/chat/ask", "/evals", "/models/delete", "/logout"):
            refused = c.post(path, data={"path": "x"}, headers={"Origin": "http://evil.example"})
            assert refused.status_code == 403, path
            refused = c.post(path, data={"path": "x"}, headers={"Sec-Fetch-Site": "cross-site"})
            assert refused.status_code == 403, path


def test_get_never_changes_state():
    with client() as c:
        for path in ("/jobs/ftjob-x/cancel", "/models/delete", "/data/upload", "/logout"):
            assert c.get(path).status_code in (404, 405), path


def test_with_a_key_nothing_works_before_logging_in(tmp_path):
    with client(api_key="sesame") as c:
        for path in PAGES:
            response = c.get(path, follow_redirects=False)
            assert response.status_code == 303 and response.headers["location"].startswith(
                "/login?next="
            ), path
        refused = c.post("/data/upload", files={"file": ("a.tsv", b"text\tlabel\n")})
        assert refused.status_code == 401
        assert c.get("/chat/stream/x", follow_redirects=False).status_code == 303
        wrong = c.post("/login", data={"api_key": "nope", "next": "/jobs"})
        assert wrong.status_code == 401 and "sesame" not in wrong.text
        login = c.post(
            "/login", data={"api_key": "sesame", "next": "/jobs"}, follow_redirects=False
        )
        assert login.headers["location"] == "/jobs"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "sesame" not in cookie
        assert c.get("/jobs").status_code == 200
        assert c.get("/v1/models").status_code == 401  # the API still wants its bearer token
        c.post("/logout")
        assert c.get("/jobs", follow_redirects=False).status_code == 303


def test_failed_logins_are_slowed_down_per_address_with_a_doubling_delay():
    from tunelab.server.ui import login_throttle

    now = [1000.0]
    with client(api_key="sesame") as c:
        c.app.state.login_throttle = login_throttle.LoginThrottle(clock=lambda: now[0])

        def log_in(key: str):
            return c.post("/login", data={"api_key": key, "next": "/"}, follow_redirects=False)

        for _ in range(login_throttle.FREE_FAILURES):
            assert log_in("guess").status_code == 401
        assert log_in("guess").status_code == 401  # past the free tries: closed for 1 s
        refused = log_in("sesame")  # even the right key waits: a guess learns nothing
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "Too many failed logins" in refused.text
        now[0] += 1
        assert log_in("guess").status_code == 401  # closed for 2 s now
        now[0] += 1.5
        assert log_in("sesame").headers["retry-after"] == "1"
        now[0] += 0.5
        assert log_in("sesame").status_code == 303  # a success forgets the failures
        assert log_in("guess").status_code == 401


def test_login_redirects_only_to_this_server():
    with client(api_key="sesame") as c:
        login = c.post(
            "/login", data={"api_key": "sesame", "next": "//evil.example/"}, follow_redirects=False
        )
        assert login.headers["location"] == "/"


def test_a_job_made_from_the_form_waits_for_run_and_shows_its_name_as_text(smollm2_home):
    with client() as c:
        dataset = c.get(format_source(c, upload(c, sample_path("trec")))).text
        train_id = re.search(r"training_file=(file-[0-9a-f]+)", dataset).group(1)
        created = c.post(
            "/jobs",
            data={
                "name": HOSTILE[1],
                "suffix": "trec",
                "provider": "local",
                "training_file": train_id,
                "n_epochs": "auto",
                "max_steps": "2",
            },
            follow_redirects=False,
        )
        assert created.status_code == 303, created.text
        page = c.get(created.headers["location"]).text
        assert "<img src=x" not in page and "&#34;&gt;&lt;img src=x" in page
        assert 'id="job-status-badge">queued<' in page and 'id="run-job"' in page
        assert 'sse-connect="/jobs/' in page  # the page follows the job live
        assert 'id="loss-chart-empty">No steps yet.' in page and "<polyline" not in page
        listing = c.get("/jobs?status=queued").text
        assert created.headers["location"].removeprefix("/jobs/") in listing
        assert (
            created.headers["location"].removeprefix("/jobs/")
            not in c.get("/jobs?status=succeeded").text
        )
        # The SmolLM2 home is shared: leave no queued job for another test's worker to run.
        assert c.post(f"{created.headers['location']}/cancel").status_code == 200


def test_a_bad_setting_is_shown_in_the_page_and_no_job_is_made(smollm2_home):
    with client() as c:
        dataset = c.get(format_source(c, upload(c, sample_path("trec")))).text
        train_id = re.search(r"training_file=(file-[0-9a-f]+)", dataset).group(1)
        before = c.get("/jobs").text.count("ftjob-")  # the SmolLM2 home is shared
        refused = c.post("/jobs", data={"training_file": train_id, "n_epochs": "three"})
        assert refused.status_code == 400 and "is not a whole number" in refused.text
        assert c.get("/jobs").text.count("ftjob-") == before


def test_chat_refuses_a_path_the_operator_did_not_list(tiny_model, tmp_path):
    with client() as c:
        for name in (str(tiny_model), "/etc", str(tmp_path / "missing")):
            asked = c.post("/chat/ask", data={"model": name, "prompt": "hi"})
            assert "model_not_found" in asked.text and "sse-connect" not in asked.text


def test_chat_streams_an_escaped_answer_from_a_local_model(tiny_model):
    with client(models=(str(tiny_model),)) as c:
        asked = c.post(
            "/chat/ask", data={"model": str(tiny_model), "prompt": HOSTILE[0], "max_tokens": "6"}
        )
        assert "&lt;script&gt;" in asked.text
        stream_url = re.search(r'sse-connect="(/chat/stream/[^"]+)"', asked.text).group(1)
        events = c.get(stream_url).text
        assert "event: delta" in events and re.search(r"event: end\ndata: \d+ tokens", events)
        assert events.rstrip().endswith("event: done\ndata:")
        again = c.get(stream_url).text  # one-time: a stream cannot be replayed
        assert "already streamed" in again


def test_a_chat_answer_that_fails_unexpectedly_says_so_in_the_page(tiny_model, monkeypatch):
    with client(models=(str(tiny_model),)) as c:
        asked = c.post("/chat/ask", data={"model": str(tiny_model), "prompt": "hi"})
        stream_url = re.search(r'sse-connect="(/chat/stream/[^"]+)"', asked.text).group(1)

        async def broken(*_):
            raise RuntimeError("a bug with /secret/path in it")

        monkeypatch.setattr(c.app.state.inference, "stream", broken)
        events = c.get(stream_url).text
        assert "event: error" in events and "server_error" in events
        assert "/secret/path" not in events  # the details go to the log, not the page
        assert events.rstrip().endswith("event: done\ndata:")


def test_a_classification_run_is_started_followed_and_reported(tmp_path, tiny_model):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": f"<category>{'AB'[i % 2]}</category>"},
            ]
        }
        for i in range(6)
    ]
    data = tmp_path / "labels_val.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    with client(models=(str(tiny_model),)) as c:
        with Store() as store:
            file = local.register_file(store, data, None)
        file_id = file.id if hasattr(file, "id") else file["id"]
        unlisted = c.post("/evals", data={"kind": "classify", "file": file_id, "model": "/etc"})
        assert "model_not_found" in unlisted.text  # no path from a form unless listed
        started = c.post(
            "/evals",
            data={"kind": "classify", "file": file_id, "model": str(tiny_model)},
            follow_redirects=False,
        )
        assert started.status_code == 303, started.text
        task_url = started.headers["location"]
        wait_until(
            lambda: (
                "HX-Redirect" in c.get(task_url, headers={"HX-Request": "1"}).headers
                or "failed" in c.get(task_url).text
            ),
            timeout=300,
        )
        run_url = c.get(task_url, headers={"HX-Request": "1"}).headers["HX-Redirect"]
        report = c.get(run_url).text
        assert 'id="run-metrics"' in report and "table class='heat'" in report
        listing = c.get("/evals").text
        assert run_url.removeprefix("/evals/") in listing
        # The listing's headline is the API's, as in `tunelab eval list`.
        headline = runs.headline(runs.get_run(run_url.removeprefix("/evals/"))).text()
        assert headline.startswith(str(tiny_model)) and f'class="headline">{headline}<' in listing
        compared = c.get(f"/evals/compare?a={run_url[7:]}&b={run_url[7:]}")
        assert compared.status_code == 200 and "accuracy" in compared.text


def test_a_pairwise_run_page_shows_each_model_rating(tmp_path):
    from tunelab.evals import runs
    from tunelab.evals.judge.task import PairwiseResult

    found = PairwiseResult(
        judge="j",
        traits=["helpfulness"],
        n_prompts=3,
        n_comparisons=6,
        n_verdicts=6,
        ratings={
            "tuned": {"rating": 1061.0, "low": 1010.0, "high": 1110.0},
            "base": {"rating": 939.0, "low": 890.0, "high": 990.0},
        },
        records={"tuned": {"wins": 4.5, "games": 6}, "base": {"wins": 1.5, "games": 6}},
        n_call_failures=0,
        n_parse_failures=0,
        errors=[],
        answers={"comparisons": []},
    )
    result = runs.record_run(
        "pairwise",
        models=["base", "tuned"],
        data={"path": "p.jsonl"},
        options={"judge": "j"},
        task=lambda: found,
        output_dir=tmp_path / "run",
    )
    with client() as c:
        page = c.get(f"/evals/{result.id}").text
    table = page[page.index('id="run-metrics"') : page.index("</table>", page.index("run-metrics"))]
    assert "rating" in table and '<td>tuned</td><td class="num">1061<' in table
    assert '<td>base</td><td class="num">939<' in table


def test_job_buttons_cancel_resume_and_delete_a_waiting_job(smollm2_home):
    with client() as c:
        dataset = c.get(format_source(c, upload(c, sample_path("trec")))).text
        train_id = re.search(r"training_file=(file-[0-9a-f]+)", dataset).group(1)
        created = c.post(
            "/jobs", data={"training_file": train_id, "max_steps": "2"}, follow_redirects=False
        )
        job_url = created.headers["location"]
        assert c.post(f"{job_url}/cancel", follow_redirects=False).status_code == 303
        page = c.get(job_url).text
        assert 'id="job-status-badge">cancelled<' in page and "/resume" in page
        assert 'sse-connect="' not in page  # a finished job's page does not follow it
        c.post(f"{job_url}/resume")
        assert 'id="job-status-badge">queued<' in c.get(job_url).text
        c.post(f"{job_url}/cancel")
        assert c.post(f"{job_url}/delete", follow_redirects=False).headers["location"] == "/jobs"
        assert c.get(job_url).status_code == 404
        refused = c.post(f"{job_url}/explode")
        assert refused.status_code == 404


def test_the_chat_and_judge_menus_offer_names_that_resolve_to_their_listed_provider():
    from tunelab.providers.resolve import resolve_chat_model

    with client() as c:
        for page, menu in (("/chat", "model"), ("/evals/new", "judge_model")):
            html = c.get(page).text
            select = re.search(rf'<select name="{menu}".*?</select>', html, re.S)
            offered = re.findall(r'<option value="([^"]+)"[^>]*>[^<(]*\((\w[\w-]*)', select[0])
            assert ("claude-sonnet-4-20250514", "anthropic") in offered, page
            for name, provider in offered:
                assert resolve_chat_model(name).provider == provider, (page, name)


def test_the_studio_shows_no_password_of_a_url():
    secret = "PLANTED-url-password-7f6e"
    with client() as c:
        asked = c.post(
            "/chat/ask", data={"model": f"m@http://bob:{secret}@10.0.0.1/v1", "prompt": "hi"}
        )
        assert "bob:***@10.0.0.1" in asked.text and secret not in asked.text


def test_pages_show_file_names_not_where_they_are_on_the_server(tmp_path):
    data_dir = tmp_path / "server-data"
    data_dir.mkdir()
    with Store() as store:
        run = store.create_eval_run(
            "classify",
            models=["m"],
            data={"path": str(data_dir / "val.jsonl"), "n_items": 3},
            options={},
        )
        store.update_eval_run(
            run.id, status="failed", html_path=str(tmp_path / "evals" / "report.html")
        )
    with client(data_dir=data_dir) as c:
        for url in ("/evals", f"/evals/{run.id}", "/data"):
            text = c.get(url).text
            assert str(tmp_path) not in text, url
        assert "val.jsonl" in c.get(f"/evals/{run.id}").text and "server-data" in text
