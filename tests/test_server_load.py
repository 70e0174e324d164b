"""The server under load and hostile bodies: a few hundred requests at once, deep JSON, bad types,
paths outside the chosen folders."""

from __future__ import annotations

import json
import threading
from http.client import HTTPConnection
from urllib.parse import urlsplit

import pytest
from _app_helpers import call_api, http, make_dataset, project_config

from sst_desktop.app.access import ALLOWED_DIRS_ENV
from sst_desktop.app.api import Api
from sst_desktop.app.server import start_server
from sst_desktop.errors import UserError

CONCURRENT = 300  # one page's thumbnails plus a few scripts, all at the same moment


@pytest.fixture()
def served(tmp_path):
    """A running server on a real tiny project: (base_url, token, api, project summary)."""
    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    summary = api.create_project(project_config(csv_path, folder=tmp_path / "proj"))
    running = start_server(api, token="load-token")
    try:
        yield running.base_url, running.token, api, summary
    finally:
        running.stop()


def _request(base: str, method: str, path: str, body: bytes | None) -> int | str:
    """One request on its own connection: the status, or the connection error's name."""
    parts = urlsplit(base)
    conn = HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError as exc:
        return type(exc).__name__
    finally:
        conn.close()


def test_a_few_hundred_concurrent_requests_are_all_answered(served):
    base, token, api, summary = served
    pid = summary["id"]
    pk = api.group_frames(pid, api.list_groups(pid)[0]["key"])[0]["pk"]
    results: list[int | str] = []
    lock = threading.Lock()
    start = threading.Barrier(CONCURRENT)

    def one(index: int) -> None:
        if index % 5 == 0:  # a fifth are API calls, the rest thumbnails, as a page makes them
            call = ("POST", f"/api/list_groups?token={token}", json.dumps({"args": [pid]}).encode())
        else:
            call = ("GET", f"/thumb/{pid}/{pk}?token={token}&n={index}", None)
        start.wait()
        status = _request(base, *call)
        with lock:
            results.append(status)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(CONCURRENT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    failures = [r for r in results if r != 200]
    assert len(results) == CONCURRENT and failures == []


def test_deeply_nested_json_body_is_a_json_400(served):
    base, token, _, _ = served
    body = b'{"args": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    status, data, headers = http(f"{base}/api/list_projects?token={token}", body, "POST")
    assert status == 400 and headers["Content-Type"].startswith("application/json")
    assert json.loads(data) == {"ok": False, "error": "Request body is nested too deeply."}


def test_argument_types_are_refused_over_http(served):
    base, token, _, summary = served
    reply = call_api(base, token, "start_run", summary["id"], "set=a")
    assert reply["_status"] == 400 and reply["ok"] is False
    assert "'group_keys' must be a list of text or null, not text" in reply["error"]
    assert call_api(base, token, "list_jobs")["ok"] is True


def test_paths_outside_the_chosen_folders_are_refused(served, monkeypatch, tmp_path):
    base, token, _, _ = served
    monkeypatch.delenv(ALLOWED_DIRS_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, args in (
        ("preview_csv", ["/etc/passwd"]),
        ("validate_config", [{"csv": "/etc/passwd", "primary_key": "x", "img_path": "x"}]),
        ("create_project", [{"csv": "/etc/passwd", "primary_key": "x", "img_path": "x"}]),
    ):
        reply = call_api(base, token, name, *args)
        assert reply["ok"] is False, name
        assert "outside the folders this app may open" in reply["error"], reply
        assert "root:" not in json.dumps(reply)


def test_allow_names_existing_folders_for_the_window_or_serve_only(tmp_path, capsys, monkeypatch):
    from sst_desktop import cli
    from sst_desktop.app.access import policy

    assert cli.main(["--serve", "--allow", str(tmp_path / "missing")]) == 2
    assert "--allow" in capsys.readouterr().err
    assert cli.main(["--infer", "spec.json", "--allow", str(tmp_path)]) == 2
    assert "--allow is for the app window or --serve" in capsys.readouterr().err
    # A folder given on the command line is one the API may open.
    monkeypatch.delenv(ALLOWED_DIRS_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    collections = tmp_path / "collections"
    (collections / "set1").mkdir(parents=True)
    with pytest.raises(UserError, match="outside the folders"):
        policy().check(collections / "set1" / "meta.csv", "CSV file")
    cli._allow_command_line_paths(cli.build_parser().parse_args(["--allow", str(collections)]))
    assert policy().check(collections / "set1" / "meta.csv", "CSV file")
