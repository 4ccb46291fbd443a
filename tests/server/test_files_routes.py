"""`/v1/files` lists what was uploaded, newest first, naming the page's first and last file."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tunelab.server.app import ServerConfig, create_app


def test_the_listing_pages_the_uploads_and_names_their_ends(tmp_path):
    client = TestClient(create_app(ServerConfig(start_worker=False)), base_url="http://localhost")
    ids = []
    for i in range(3):
        line = b'{"messages": [{"role": "user", "content": "q%d"}, ' % i
        line += b'{"role": "assistant", "content": "a"}]}\n'
        sent = client.post(
            "/v1/files", files={"file": (f"t{i}.jsonl", line)}, data={"purpose": "fine-tune"}
        )
        assert sent.status_code == 200, sent.text
        ids.append(sent.json()["id"])

    listing = client.get("/v1/files").json()
    assert [f["id"] for f in listing["data"]] == ids[::-1]
    assert (listing["first_id"], listing["last_id"], listing["has_more"]) == (ids[2], ids[0], False)
    page = client.get("/v1/files", params={"order": "asc", "limit": 2}).json()
    assert [f["id"] for f in page["data"]] == ids[:2] and page["has_more"]
    rest = client.get("/v1/files", params={"order": "asc", "after": page["last_id"]}).json()
    assert [f["id"] for f in rest["data"]] == ids[2:]
