"""Tests for recstudio_edge.data.catalog.ensure_dataset against a local HTTP server.

A tiny zip in the GroupLens layout (top folder ``ml-1m/``) is generated under
tmp_path and served from 127.0.0.1 on an ephemeral port; no real MovieLens
data is involved and nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from recstudio_edge.data.catalog import CATALOG, ensure_dataset
from recstudio_edge.data.errors import DataError
from recstudio_edge.data.readers import read_dataset

RATINGS = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
USERS = "1::F::1::10::48067\n2::M::56::16::70072\n"
MOVIES = "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James (1996)::Animation|Musical\n"


def make_zip(path: Path, members: dict[str, str]) -> str:
    """Write a zip with ``members`` (name -> text) and return its sha256."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Handler(http.server.SimpleHTTPRequestHandler):
    hits: list[str]

    def do_GET(self):  # noqa: N802 - http.server API
        self.hits.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep pytest output quiet
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Make sure requests to 127.0.0.1 never go through a configured proxy."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (base_url, www_dir, hits)."""
    www = tmp_path / "www"
    www.mkdir()
    hits: list[str] = []
    handler = type("Handler", (_Handler,), {"hits": hits})

    def factory(*args, **kwargs):
        return handler(*args, directory=str(www), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www, hits
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def grouplens_zip(www: Path) -> str:
    return make_zip(www / "ml-1m.zip", {
        "ml-1m/ratings.dat": RATINGS, "ml-1m/users.dat": USERS,
        "ml-1m/movies.dat": MOVIES, "ml-1m/README": "test archive\n",
    })


def test_download_verify_unpack(server, tmp_path):
    base, www, hits = server
    sha = grouplens_zip(www)
    data_dir = tmp_path / "datasets"
    spec = {"name": "ml-1m", "format": "auto", "url": f"{base}/ml-1m.zip", "sha256": sha,
            "archive_root": "ml-1m"}
    folder = ensure_dataset("ml-1m", data_dir, spec, progress=False)
    assert folder == (data_dir / "ml-1m").resolve()
    assert sorted(p.name for p in folder.iterdir()) == ["README", "movies.dat", "ratings.dat", "users.dat"]
    assert sorted(p.name for p in data_dir.iterdir()) == ["ml-1m"]  # no temp files left
    assert hits == ["/ml-1m.zip"]
    rt = read_dataset(data_dir, spec)
    assert rt.inter["item_id"].tolist() == ["1193", "661", "1193"]
    # second call: files are there, no new request
    assert ensure_dataset("ml-1m", data_dir, spec, progress=False) == folder
    assert hits == ["/ml-1m.zip"]


def test_download_with_progress_and_auto_root(server, tmp_path):
    base, www, hits = server
    sha = grouplens_zip(www)
    spec = {"url": f"{base}/ml-1m.zip", "sha256": sha, "archive_root": None}
    folder = ensure_dataset("ml-1m", tmp_path / "d", spec, progress=True)
    assert (folder / "ratings.dat").read_text() == RATINGS


def test_wrong_sha256_raises_and_leaves_nothing(server, tmp_path):
    base, www, hits = server
    sha = grouplens_zip(www)
    data_dir = tmp_path / "datasets"
    data_dir.mkdir()
    spec = {"url": f"{base}/ml-1m.zip", "sha256": "0" * 64}
    with pytest.raises(DataError) as ei:
        ensure_dataset("ml-1m", data_dir, spec, progress=False)
    msg = str(ei.value)
    assert f"expected {'0' * 64}, got {sha}" in msg
    assert "checksum mismatch for ml-1m" in msg
    assert list(data_dir.iterdir()) == []
    assert hits == ["/ml-1m.zip"]


@pytest.mark.parametrize("marker", ["ratings.dat", "ml-1m.inter", "u.data"])
def test_local_files_mean_no_request(server, tmp_path, marker):
    base, www, hits = server
    grouplens_zip(www)
    folder = tmp_path / "datasets" / "ml-1m"
    folder.mkdir(parents=True)
    (folder / marker).write_text("x")
    got = ensure_dataset("ml-1m", tmp_path / "datasets", {"url": f"{base}/ml-1m.zip"}, progress=False)
    assert got == folder.resolve()
    assert hits == []


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/ml-1m.zip"


def test_unreachable_url_says_what_to_put_where(tmp_path):
    data_dir = tmp_path / "datasets"
    with pytest.raises(DataError) as ei:
        ensure_dataset("ml-1m", data_dir, {"url": closed_port_url(), "sha256": "0" * 64}, progress=False)
    msg = str(ei.value)
    assert msg.startswith("cannot download ml-1m from http://127.0.0.1:")
    target = (data_dir / "ml-1m").resolve()
    assert msg.endswith(f"; put ratings.dat, users.dat, movies.dat (GroupLens ml-1m) or "
                        f"ml-1m.inter/.user/.item (RecBole atomic) into {target}/")
    assert list(data_dir.iterdir()) == []


def test_download_disabled_and_http_404(server, tmp_path):
    base, www, hits = server
    with pytest.raises(DataError, match=r"cannot download ml-100k .*download disabled.*put u\.data, "
                                        r"u\.user, u\.item \(GroupLens ml-100k\)"):
        ensure_dataset("ml-100k", tmp_path, {"url": f"{base}/x.zip", "sha256": "0" * 64}, download=False)
    assert hits == []
    with pytest.raises(DataError, match=r"cannot download ml-100k .*HTTP Error 404"):
        ensure_dataset("ml-100k", tmp_path, {"url": f"{base}/missing.zip", "sha256": "0" * 64}, progress=False)


def test_zip_slip_member_is_refused(server, tmp_path):
    base, www, hits = server
    sha = make_zip(www / "evil.zip", {"ml-1m/ratings.dat": RATINGS, "../../evil.txt": "pwned"})
    data_dir = tmp_path / "datasets"
    with pytest.raises(DataError, match="unsafe archive member '../../evil.txt'"):
        ensure_dataset("ml-1m", data_dir, {"url": f"{base}/evil.zip", "sha256": sha}, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))
    assert list(data_dir.iterdir()) == []


def test_unknown_dataset_lists_close_names(tmp_path):
    with pytest.raises(DataError) as ei:
        ensure_dataset("ml-1M", tmp_path, {})
    msg = str(ei.value)
    assert "unknown dataset 'ml-1M'" in msg and "did you mean ml-1m" in msg
    assert "known datasets: ml-100k, ml-1m" in msg


def test_catalogue_entries():
    assert CATALOG["ml-1m"].url == "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
    assert CATALOG["ml-100k"].url == "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    for info in CATALOG.values():
        assert len(info.sha256) == 64 and int(info.sha256, 16) >= 0


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m"])
def test_config_files_match_catalogue(name):
    import yaml

    path = Path(__file__).resolve().parents[2] / "configs" / "data" / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())["data"]
    info = CATALOG[name]
    assert data["name"] == name and data["format"] == "auto"
    assert (data["url"], data["sha256"], data["archive_root"]) == (info.url, info.sha256, info.archive_root)


def test_spec_overrides_and_catalogue_fallback():
    from recstudio_edge.data.catalog import _resolve_source

    info = CATALOG["ml-1m"]
    assert _resolve_source("ml-1m", {}) == (info.url, info.sha256, "ml-1m")
    assert _resolve_source("ml-1m", {"url": None, "sha256": None, "archive_root": None}) == \
        (info.url, info.sha256, "ml-1m")
    assert _resolve_source("ml-1m", {"url": "http://x/y.zip", "sha256": "unverified"}) == \
        ("http://x/y.zip", "unverified", None)
    assert _resolve_source("ml-1m", {"url": "http://x/y.zip", "sha256": "AB" * 32, "archive_root": ""}) == \
        ("http://x/y.zip", "ab" * 32, "")
    assert _resolve_source("other", {}) == (None, None, None)


def test_a_custom_url_needs_a_checksum_and_a_digest_is_text(server, tmp_path):
    base, www, hits = server
    sha = grouplens_zip(www)
    with pytest.raises(DataError, match=r"field 'sha256': data\.url .*ml-1m\.zip has no data\.sha256: set the "
                                        r"archive's sha256 .*or data\.sha256: unverified"):
        ensure_dataset("ml-1m", tmp_path / "a", {"url": f"{base}/ml-1m.zip"}, progress=False)
    with pytest.raises(DataError, match=r"data\.sha256 must be the hex digest as text .*got the int 123"):
        ensure_dataset("ml-1m", tmp_path / "a", {"url": f"{base}/ml-1m.zip", "sha256": 123}, progress=False)
    with pytest.raises(DataError, match=r"data\.sha256 '0123' is not a sha256 digest"):
        ensure_dataset("ml-1m", tmp_path / "a", {"url": f"{base}/ml-1m.zip", "sha256": "0123"}, progress=False)
    assert hits == [] and not (tmp_path / "a").exists()
    folder = ensure_dataset("ml-1m", tmp_path / "b", {"url": f"{base}/ml-1m.zip", "sha256": "unverified"},
                            progress=False)
    assert (folder / "ratings.dat").read_text() == RATINGS and sha


def test_a_download_is_capped_before_its_checksum(server, tmp_path, monkeypatch):
    from recstudio_edge.data import catalog

    base, www, hits = server
    (www / "big.zip").write_bytes(b"x" * 5000)
    monkeypatch.setattr(catalog, "MAX_DOWNLOAD_BYTES", 4096)
    data_dir = tmp_path / "datasets"
    with pytest.raises(DataError, match=r"big\.zip: the server announces 5000 bytes, more than the 4096"):
        ensure_dataset("ml-1m", data_dir, {"url": f"{base}/big.zip", "sha256": "0" * 64}, progress=False)
    assert list(data_dir.iterdir()) == []


def test_a_zip_bomb_is_refused_before_unpacking(server, tmp_path, monkeypatch):
    from recstudio_edge.data import catalog

    base, www, hits = server
    sha = make_zip(www / "bomb.zip", {"ml-1m/ratings.dat": "1::1::5::1\n" * 2000})
    monkeypatch.setattr(catalog, "MAX_UNPACKED_BYTES", 1000)
    data_dir = tmp_path / "datasets"
    with pytest.raises(DataError, match=r"the archive unpacks to 22000 bytes, more than 1000; refusing to unpack"):
        ensure_dataset("ml-1m", data_dir, {"url": f"{base}/bomb.zip", "sha256": sha}, progress=False)
    assert list(data_dir.iterdir()) == []
    sha = make_zip(www / "ctl.zip", {"ml-1m/ratings\x1b[2J.dat": RATINGS})
    with pytest.raises(DataError, match=r"unsafe archive member 'ml-1m/ratings\\x1b\[2J\.dat'"):
        ensure_dataset("ml-1m", data_dir, {"url": f"{base}/ctl.zip", "sha256": sha}, progress=False)
