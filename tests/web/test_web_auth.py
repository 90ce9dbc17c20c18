"""Who may use the page: the listener rule, the stored secret, cross-site POSTs, no secret shown."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libwatch.errors import ConfigError, UsageError
from libwatch.web import auth

from .conftest import basic, stop_web

SECRET = "correct horse battery staple"
HASH = auth.hash_secret(SECRET, salt=b"0123456789abcdef")


# ---------------------------------------------------------------- the rules, as functions

def test_a_stored_secret_verifies_only_itself() -> None:
    stored = auth.hash_secret(SECRET)
    assert stored.startswith("scrypt$16384$8$1$") and SECRET not in stored
    assert auth.verify_secret(SECRET, stored)
    assert not auth.verify_secret(SECRET + " ", stored)
    assert stored != auth.hash_secret(SECRET)  # a fresh salt each time


@pytest.mark.parametrize("stored", ["", "plain-text-password", "scrypt$16384$8$1$!!$!!", "scrypt$3$8$1$AA==$AA==",
                                    "bcrypt$12$x$y$z$w"])
def test_a_malformed_stored_hash_is_a_config_error(stored: str) -> None:
    with pytest.raises(ConfigError, match="web_secret_hash"):
        auth.check_stored(stored)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", None, "/run/web.sock"])
def test_local_listeners_need_no_secret(address: Any) -> None:
    assert auth.access_for("admin", None, address if address is None or address.startswith("/")
                           else (address, 8470)) == auth.Access("admin", None)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.168.1.20", "fe80::1", "example.org"])
def test_other_listeners_refuse_to_start_without_a_secret(address: str) -> None:
    with pytest.raises(UsageError, match="without authentication"):
        auth.access_for("admin", None, (address, 8470))
    assert auth.access_for("admin", HASH, (address, 8470)).required


def test_bearer_and_basic_credentials() -> None:
    access = auth.Access("admin", HASH)
    assert auth.authorized(access, f"Bearer {SECRET}")
    assert auth.authorized(access, basic("admin", SECRET)["Authorization"])
    for wrong in (None, "", "Bearer nope", f"Bearer {SECRET}x", basic("root", SECRET)["Authorization"],
                  basic("admin", "nope")["Authorization"], "Basic !!!notbase64",
                  "Basic " + base64.b64encode(b"admin").decode(), f"Digest {SECRET}"):
        assert not auth.authorized(access, wrong), wrong
    assert auth.authorized(auth.Access("admin", None), None)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=40))
def test_no_other_bearer_token_passes(token: str) -> None:
    assert auth.authorized(auth.Access("admin", HASH), f"Bearer {token}") == (token.strip() == SECRET)


@pytest.mark.parametrize(("headers", "host", "cross"), [
    ({"sec-fetch-site": "same-origin"}, "127.0.0.1:8470", False),
    ({"sec-fetch-site": "none"}, "127.0.0.1:8470", False),
    ({"sec-fetch-site": "cross-site"}, "127.0.0.1:8470", True),
    ({"sec-fetch-site": "same-site"}, "127.0.0.1:8470", True),
    ({"origin": "http://127.0.0.1:8470"}, "127.0.0.1:8470", False),
    ({"origin": "http://evil.example"}, "127.0.0.1:8470", True),
    ({"origin": "null"}, "127.0.0.1:8470", True),
    ({}, "127.0.0.1:8470", False),  # curl, scripts: no browser, nothing to forge
])
def test_cross_site_requests_are_recognised(headers: dict[str, str], host: str, cross: bool) -> None:
    assert auth.cross_site(headers, host) is cross


# ---------------------------------------------------------------- the rules, over HTTP

def test_non_loopback_listener_without_credentials_refuses_to_start(cli_env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "libwatch", "web", "--host", "0.0.0.0", "--port", "0"],
                          env=cli_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "libwatch: error: refusing to listen on 0.0.0.0:0 without authentication: set web_secret_hash "
        "(libwatch web --hash-secret prints it) or listen on 127.0.0.1"]


def test_with_a_secret_every_request_needs_it(web: Any, photos: Path) -> None:
    server = web("--host", "0.0.0.0", env={"LIBWATCH_WEB_SECRET_HASH": HASH})
    server.url = server.url.replace("0.0.0.0", "127.0.0.1")
    for method, path in (("GET", "/"), ("GET", "/api/v1/libraries/photos"), ("GET", "/metrics"),
                         ("POST", "/api/v1/libraries/photos/pause"), ("POST", "/libraries/photos/run")):
        refused = server.request(method, path)
        assert refused.status == 401, (method, path)
        assert refused.headers["www-authenticate"].startswith("Basic realm=")
        assert server.request(method, path, headers={"Authorization": "Bearer wrong"}).status == 401
    assert server.get("/api/v1/libraries/photos", headers={"Authorization": f"Bearer {SECRET}"}).status == 200
    assert server.get("/", headers=basic("admin", SECRET)).status == 200
    paused = server.post("/api/v1/libraries/photos/pause", headers={"Authorization": f"Bearer {SECRET}"})
    assert paused.status == 200 and paused.json()["schedule"]["paused"] is True
    log = stop_web(server)
    assert SECRET not in log and HASH not in log


def test_cross_site_posts_get_403_and_change_nothing(web: Any, photos: Path, libwatch: Any) -> None:
    server = web()
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        for path in ("/libraries/photos/pause", "/api/v1/libraries/photos/pause", "/libraries/photos/run"):
            refused = server.post(path, headers=headers)
            assert refused.status == 403, (headers, path)
            assert refused.json()["error"]["message"] == "cross-site request refused"
    assert server.get("/api/v1/libraries/photos").json()["libraries"][0]["paused"] is False
    assert [run["trigger"] for run in server.get("/api/v1/libraries/photos/history").json()["runs"]] == ["manual"]
    same = server.post("/libraries/photos/pause", {"to": "library"},
                       headers={"Origin": server.url.rstrip("/"), "Sec-Fetch-Site": "same-origin"})
    assert same.status == 303 and same.headers["location"] == "/libraries/photos?notice=pause"


def test_without_a_secret_only_localhost_names_are_answered(web: Any) -> None:
    server = web()
    assert server.get("/", headers={"Host": "evil.example"}).status == 403  # DNS rebinding
    assert server.get("/", headers={"Host": "localhost:8470"}).status == 200


def test_no_secret_of_the_settings_appears_in_pages_documents_or_log(web: Any, photos: Path, amqp_url: str) -> None:
    server = web(env={"LIBWATCH_AMQP_URL": amqp_url, "LIBWATCH_WEB_SECRET_HASH": HASH})  # password "guest"
    seen = [server.get(path, headers={"Authorization": f"Bearer {SECRET}"}).text
            for path in ("/", "/libraries/photos", "/api/v1/broker", "/api/v1/libraries", "/metrics",
                         "/api/v1/openapi.json")]
    seen.append(stop_web(server))
    for text in seen:
        assert ":guest@" not in text  # shown as guest:***@
        assert SECRET not in text and HASH not in text
    assert "amqp://guest:***@127.0.0.1:5672/%2F" in seen[0]


def test_an_unreachable_catalog_is_a_503_without_its_password(web: Any) -> None:
    uri = "mongodb://libwatch:topsecret@127.0.0.1:1/?serverSelectionTimeoutMS=500&connectTimeoutMS=500"
    server = web(env={"LIBWATCH_MONGO_URI": uri})
    page = server.get("/")
    assert page.status == 503 and "<html" in page.text and "unreachable" in page.text
    api = server.get("/api/v1/libraries")
    assert api.status == 503
    assert api.json()["error"]["exit_code"] == 69 and api.json()["error"]["kind"] == "CatalogUnavailable"
    metrics = server.get("/metrics")
    assert metrics.status == 503
    log = stop_web(server)
    for text in (page.text, api.text, metrics.text, log):
        assert "topsecret" not in text
    assert "libwatch:***@127.0.0.1:1" in api.text


def test_hash_secret_prints_the_config_line_that_lets_the_server_listen(web: Any, libwatch: Any,
                                                                          tmp_path: Path) -> None:
    printed = libwatch("web", "--hash-secret", input="s3cret token\n")
    assert printed.code == 0 and "s3cret" not in printed.stdout
    line = printed.stdout.strip()
    assert line.startswith('web_secret_hash = "scrypt$16384$8$1$')
    config = tmp_path / "config.toml"
    config.write_text(line + '\nweb_user = "ops"\n')
    server = web("--host", "0.0.0.0", env={"LIBWATCH_CONFIG": str(config)})
    server.url = server.url.replace("0.0.0.0", "127.0.0.1")
    assert server.get("/api/v1/libraries").status == 401
    assert server.get("/api/v1/libraries", headers=basic("ops", "s3cret token")).status == 200
    assert server.get("/api/v1/libraries", headers=basic("admin", "s3cret token")).status == 401

    config.write_text('web_secret_hash = "hunter2"\n')  # a clear-text password is refused, not used
    refused = libwatch("web", "--host", "0.0.0.0", "--port", "0", env={"LIBWATCH_CONFIG": str(config)})
    assert refused.code == 2 and "web_secret_hash is not a hash" in refused.stderr and "hunter2" not in refused.stderr
    assert libwatch("web", "--hash-secret", input="\n").code == 2
    as_json = json.loads(libwatch("--json", "web", "--hash-secret", input="s3cret token\n").stdout)
    assert list(as_json) == ["web_secret_hash"] and as_json["web_secret_hash"].startswith("scrypt$16384$8$1$")


def test_pages_cannot_be_framed_or_load_foreign_code(web: Any, photos: Path) -> None:
    server = web()
    for path in ("/", "/libraries/photos", "/api/v1/libraries", "/static/style.css"):
        headers = {key.lower(): value for key, value in server.get(path).headers.items()}
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    refused = server.post("/libraries/photos/pause", headers={"Origin": "http://evil.example"})
    assert refused.status == 403 and refused.headers["x-frame-options"] == "DENY"
    page = server.get("/").text
    assert "<script src=\"/static/page.js\"" in page and "http://" not in page.split("<main>")[0]
