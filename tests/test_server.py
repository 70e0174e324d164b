"""The bottle server: launch token on every route, no path escapes, API dispatch, `--serve`."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _app_helpers import call_api, http, make_dataset, project_config
from PIL import Image

from sst_desktop.app.api import Api
from sst_desktop.app.server import COOKIE_NAME, start_server
from sst_desktop.data import masks

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def served(tmp_path):
    """A running server on a real tiny project: (base_url, token, api, project summary)."""
    csv_path = make_dataset(tmp_path / "data")
    api = Api(mode="browser")
    summary = api.create_project(project_config(csv_path, folder=tmp_path / "proj"))
    running = start_server(api, token="test-token-123")
    try:
        yield running.base_url, running.token, api, summary
    finally:
        running.stop()


def test_every_route_kind_refuses_a_missing_or_wrong_token(served):
    base, token, api, summary = served
    pid = summary["id"]
    ids = np.zeros((64, 96), dtype=np.uint8)
    ids[20:40, 30:60] = 1
    masks.write_mask(api._project(pid).ref_mask_path("beetle-0"), ids)
    frame = api.open_frame(pid, "beetle-0")  # the saved ID becomes working mask 0
    assert [(m["index"], m["id"], m["source"]) for m in frame["masks"]] == [(0, 1, "saved")]
    routes = [
        ("GET", "/"),
        ("GET", "/ui/index.html"),
        ("GET", "/js/transport.js"),
        ("GET", f"/image/{pid}/beetle-0"),
        ("GET", f"/thumb/{pid}/beetle-0"),
        ("GET", f"/mask/{pid}/ref/beetle-0.png"),
        ("GET", f"/candidate/{pid}/beetle-0/0.png"),
        ("POST", "/api/app_info"),
        ("POST", "/api/list_projects"),
    ]
    for method, route in routes:
        data = {"args": []} if method == "POST" else None
        status, body, _ = http(base + route, data, method)
        assert status == 401, (route, status)
        assert b"beetle" not in body and b"<script" not in body
        sep = "&" if "?" in route else "?"
        status, _, _ = http(f"{base}{route}{sep}token=wrong", data, method)
        assert status == 403, (route, status)
        status, _, _ = http(base + route, data, method, headers={"Cookie": f"{COOKIE_NAME}=wrong"})
        assert status == 403, (route, status)
    # With the token the same routes answer.
    for method, route in routes:
        data = {"args": []} if method == "POST" else None
        sep = "&" if "?" in route else "?"
        status, _, _ = http(f"{base}{route}{sep}token={token}", data, method)
        assert status == 200, (route, status)


def test_index_sets_the_token_cookie_for_module_imports(served):
    base, token, _, _ = served
    status, body, headers = http(f"{base}/?token={token}")
    assert status == 200 and b"<html" in body.lower()
    cookie = headers.get("Set-Cookie", "")
    assert f"{COOKIE_NAME}={token}" in cookie
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    status, body, _ = http(f"{base}/js/transport.js", headers={"Cookie": f"{COOKIE_NAME}={token}"})
    assert status == 200 and b"export" in body


def test_no_path_outside_the_project_can_be_fetched(served, tmp_path):
    base, token, api, summary = served
    pid = summary["id"]
    secret = (
        tmp_path / "data" / "images" / "secret.jpg"
    )  # beside the project's images, not in its CSV
    Image.new("RGB", (8, 8), "red").save(secret)
    secret_text = tmp_path / "secret.txt"
    secret_text.write_text("TOP-SECRET")
    etc = "/etc/passwd"
    attempts = [
        f"/image/{pid}/secret",
        f"/image/{pid}/secret.jpg",
        f"/image/{pid}/..%2Fsecret.txt",
        f"/image/{pid}/%2Fetc%2Fpasswd",
        f"/image/{pid}/../../../../etc/passwd",
        f"/image/{pid}/{secret}",
        f"/thumb/{pid}/{secret_text}",
        "/image/not-a-project/beetle-0",
        f"/mask/{pid}/ref/..%2F..%2Fspec.json.png",
        f"/mask/{pid}/ref/..%2Fspec.png",
        f"/mask/{pid}/..%2F/beetle-0.png",
        f"/mask/{pid}/spec/beetle-0.png",
        f"/candidate/{pid}/secret/0.png",
        "/ui/../../../../etc/passwd",
        "/ui/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        f"/ui/{etc}",
        f"/{secret_text}",
        "/ui/../sst_desktop/api.py",
    ]
    for route in attempts:
        sep = "&" if "?" in route else "?"
        status, body, _ = http(f"{base}{route}{sep}token={token}")
        assert status in (400, 403, 404), (route, status)
        assert b"TOP-SECRET" not in body and b"root:" not in body and b"JFIF" not in body[:16], (
            route
        )
    # A project that is no longer registered is not served either, even from memory.
    api.delete_project(pid, False)
    status, _, _ = http(f"{base}/image/{pid}/beetle-0?token={token}")
    assert status == 404


def test_images_are_exif_corrected_scaled_and_masks_raw_or_coloured(served):
    base, token, api, summary = served
    pid = summary["id"]
    status, body, headers = http(f"{base}/image/{pid}/moth-0?token={token}")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(body)).size == (64, 96)  # stored 96x64 with EXIF rotation 6
    status, body, headers = http(f"{base}/image/{pid}/moth-0?max=48&token={token}")
    assert Image.open(io.BytesIO(body)).size == (32, 48)
    etag = headers["ETag"]
    status, body, _ = http(
        f"{base}/image/{pid}/moth-0?max=48&token={token}", headers={"If-None-Match": etag}
    )
    assert status == 304 and body == b""
    status, body, _ = http(f"{base}/thumb/{pid}/beetle-1?token={token}")
    assert status == 200 and max(Image.open(io.BytesIO(body)).size) <= 256

    project = api._project(pid)
    ids = np.zeros((96, 64), dtype=np.uint8)
    ids[10:40, 5:30] = 3
    ref = masks.write_mask(project.ref_mask_path("moth-0"), ids)
    status, body, headers = http(f"{base}/mask/{pid}/ref/moth-0.png?token={token}")
    assert status == 200 and body == ref.read_bytes()
    status, body, _ = http(f"{base}/mask/{pid}/ref/moth-0.png?color=1&token={token}")
    rgba = np.array(Image.open(io.BytesIO(body)))
    assert rgba.shape == (96, 64, 4)
    assert rgba[20, 10, 3] == 255 and rgba[0, 0, 3] == 0


def test_api_dispatch_result_and_error_shapes(served, monkeypatch, tmp_path):
    base, token, api, summary = served
    info = call_api(base, token, "app_info")
    assert info["ok"] is True and info["result"]["mode"] == "browser"
    assert len(info["result"]["palette"]) == 256
    projects = call_api(base, token, "list_projects")["result"]
    assert [p["id"] for p in projects] == [summary["id"]]
    assert projects[0]["images"] == 6 and projects[0]["groups"] == 2

    # A UserError reaches the UI word for word.
    reply = call_api(base, token, "list_groups", "no-such-project")
    assert reply == {"ok": False, "error": reply["error"], "_status": 200}
    assert "'no-such-project' is not in the project list" in reply["error"]

    # Unknown and private names are not callable; wrong argument counts are explained.
    for name in ("_project", "nope", "__init__", "_frame_image_path"):
        reply = call_api(base, token, name)
        assert reply["ok"] is False and reply["_status"] == 404
    reply = call_api(base, token, "job_status")
    assert reply["ok"] is False and reply["_status"] == 400 and "job_status" in reply["error"]
    status, body, _ = http(f"{base}/api/app_info?token={token}", b"{not json", "POST")
    assert status == 400 and json.loads(body)["ok"] is False

    # An unexpected exception: class + message for the UI, traceback in the log file.
    def broken(path, delimiter=None):
        raise ZeroDivisionError("boom in preview")

    monkeypatch.setattr("sst_desktop.data.table.read_csv", broken)
    from sst_desktop.app.server import configure_logging

    log_file = configure_logging()
    reply = call_api(base, token, "preview_csv", str(tmp_path / "whatever.csv"))
    assert reply["ok"] is False
    assert reply["error"] == "ZeroDivisionError: boom in preview"
    text = log_file.read_text()
    assert "Traceback" in text and "boom in preview" in text


def test_serve_prints_the_url_with_token_first(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sst_desktop", "--serve", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline().strip()
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_\-]{20,})", first)
        assert match, f"first stdout line was {first!r}"
        port, token = match.groups()
        base = f"http://127.0.0.1:{port}"
        status, body, _ = http(f"{base}/?token={token}")
        assert status == 200 and b"SST Desktop" in body
        assert http(f"{base}/")[0] == 401
        assert http(f"{base}/?token=x{token}")[0] == 403
        reply = call_api(base, token, "app_info")
        assert reply["ok"] and reply["result"]["mode"] == "browser"
        # First launch: the sample project appears without any user action (list_projects
        # waits for the background setup that creates it).
        if importlib.util.find_spec("sst_desktop.data.sample") is not None:
            projects = call_api(base, token, "list_projects")["result"]
            assert len(projects) == 1, "the sample project was not created on first launch"
            assert projects[0]["images"] > 0 and not projects[0]["missing"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_api_is_not_callable_cross_site_with_the_cookie_alone(served):
    # The cookie also travels with requests from other local sites (another port is the same
    # site), e.g. an HTML form posting text/plain: the API needs the token in the URL and JSON.
    base, token, api, summary = served
    cookie = {"Cookie": f"{COOKIE_NAME}={token}"}
    form_like = b'{"args": []}'
    status, body, _ = http(
        f"{base}/api/list_projects",
        form_like,
        "POST",
        headers={**cookie, "Content-Type": "text/plain"},
    )
    assert status in (401, 403), (status, body)
    status, body, _ = http(f"{base}/api/list_projects", {"args": []}, "POST", headers=cookie)
    assert status in (401, 403) and b"token" in body
    # With the URL token but a body a form could send, still refused (no preflight happened).
    status, body, _ = http(
        f"{base}/api/list_projects?token={token}",
        form_like,
        "POST",
        headers={"Content-Type": "text/plain"},
    )
    assert status == 415 and b"application/json" in body
    # A cookie-only image load started by another site is refused too; the page's own loads pass.
    route = f"/thumb/{summary['id']}/beetle-0"
    status, _, _ = http(base + route, headers={**cookie, "Sec-Fetch-Site": "same-site"})
    assert status == 403
    status, _, _ = http(base + route, headers={**cookie, "Sec-Fetch-Site": "same-origin"})
    assert status == 200
    # The UI's own call still works.
    assert call_api(base, token, "list_projects")["ok"] is True


def test_working_masks_are_served_scaled_down_on_request(served):
    # The label canvas keeps masks at <= 1024 px; a full-size RGBA PNG per candidate of a 24 MP
    # photo costs ~100 MB and a third of a second each, for nothing.
    base, token, api, summary = served
    pid = summary["id"]
    api.open_frame(pid, "beetle-0")
    region = np.zeros((64, 96), dtype=bool)
    region[10:30, 20:50] = True
    wm = api._session(pid, "beetle-0", create=False).add(
        region, predicted_iou=None, stability_score=None, id=None, source="candidate"
    )
    route = f"{base}/candidate/{pid}/beetle-0/{wm.index}.png?token={token}"
    status, body, _ = http(route)
    assert status == 200 and Image.open(io.BytesIO(body)).size == (96, 64)
    status, body, headers = http(route + "&max=48")
    assert status == 200
    small = np.array(Image.open(io.BytesIO(body)))
    assert small.shape == (32, 48, 4)
    # Each output pixel samples the full-size pixel under its centre: what the canvas would show.
    ys = ((np.arange(32) + 0.5) * 64 / 32).astype(int)
    xs = ((np.arange(48) + 0.5) * 96 / 48).astype(int)
    assert np.array_equal(small[..., 3] > 0, region[ys][:, xs])
    status, body, _ = http(route + "&max=4096")  # never scaled up
    assert Image.open(io.BytesIO(body)).size == (96, 64)


def test_grid_tile_masks_are_thumbnail_sized_with_a_contrasting_outline(served):
    from sst_desktop.data import palette

    base, token, api, summary = served
    pid = summary["id"]
    # A photo (and so its mask) bigger than a tile: the tile comes back scaled down.
    Image.new("RGB", (768, 512), "white").save(api._project(pid).frame("beetle-0").image_path)
    ids = np.zeros((512, 768), dtype=np.uint8)
    ids[100:400, 200:600] = 1  # ID 1: orange, light -> a black edge
    ids[420:500, 20:120] = 5  # ID 5: dark blue -> a white edge
    masks.write_mask(api._project(pid).pred_mask_path("beetle-0"), ids)
    route = f"{base}/mask/{pid}/pred/beetle-0.png?color=1&token={token}"
    status, body, _ = http(route + "&max=96&outline=1")
    assert status == 200
    tile = np.asarray(Image.open(io.BytesIO(body)))
    assert tile.shape == (64, 96, 4)
    orange, blue = palette.id_color(1), palette.id_color(5)
    assert tuple(tile[32, 50, :3]) == orange  # inside: the ID's colour
    assert tuple(tile[12, 50]) == (0, 0, 0, 255)  # the top edge of ID 1
    assert tuple(tile[12 + 2, 50, :3]) == orange  # the edge is 2 px wide
    assert tuple(tile[56, 3]) == (255, 255, 255, 255)  # the left edge of ID 5
    assert tuple(tile[58, 8, :3]) == blue
    assert tile[5, 5, 3] == 0  # background stays clear
    # Without the tile options: the full-size coloured mask, no outline (and a different ETag).
    status, body, headers = http(route)
    full = np.asarray(Image.open(io.BytesIO(body)))
    assert full.shape == (512, 768, 4) and tuple(full[100, 300, :3]) == orange


def test_an_image_the_csv_names_outside_the_allowed_folders_is_not_served(tmp_path, monkeypatch):
    # A CSV (it can be uploaded through the browser) naming a file elsewhere on the machine must
    # not turn the image routes into a way to read that file.
    allowed = [tmp_path / "data", tmp_path / "proj"]
    monkeypatch.setenv("SST_DESKTOP_ALLOWED_DIRS", os.pathsep.join(map(str, allowed)))
    csv_path = make_dataset(tmp_path / "data")
    outside = tmp_path / "outside" / "private.jpg"
    outside.parent.mkdir()
    Image.new("RGB", (32, 24), "red").save(outside)
    with csv_path.open("a", encoding="utf-8") as f:
        f.write(f"stray,beetle,{outside}\n")
    api = Api(mode="browser")
    summary = api.create_project(project_config(csv_path, folder=tmp_path / "proj"))
    running = start_server(api, token="test-token-123")
    try:
        pid, token = summary["id"], running.token
        for route in (f"/image/{pid}/stray", f"/thumb/{pid}/stray"):
            status, body, _ = http(f"{running.base_url}{route}?token={token}")
            assert status in (403, 404) and b"JFIF" not in body[:16], route
            assert b"outside the project's image folder" in body and b"--allow" in body
        status, body, _ = http(f"{running.base_url}/image/{pid}/beetle-0?token={token}")
        assert status == 200 and body[:2] == b"\xff\xd8"  # the project's own images still are
        with pytest.raises(Exception, match="outside the project's image folder"):
            api.open_frame(pid, "stray")
    finally:
        running.stop()


def test_a_coloured_mask_of_another_size_than_its_image_is_refused_before_decoding(served):
    base, token, api, summary = served
    pid = summary["id"]
    path = api._project(pid).ref_mask_path("beetle-0")
    Image.new("L", (3000, 3000), 1).save(path)  # a small file holding a 9-MP mask; image is 96x64
    status, body, _ = http(f"{base}/mask/{pid}/ref/beetle-0.png?color=1&token={token}")
    assert status == 404 and b"3000x3000 but its image is 96x64" in body
    ids = np.zeros((64, 96), dtype=np.uint8)
    ids[10:20, 10:30] = 2
    masks.write_mask(path, ids)
    status, body, _ = http(f"{base}/mask/{pid}/ref/beetle-0.png?color=1&token={token}")
    assert status == 200
    rgba = np.array(Image.open(io.BytesIO(body)))
    assert rgba.shape == (64, 96, 4) and (rgba[..., 3] > 0).sum() == 200
