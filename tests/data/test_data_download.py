"""Pinned downloads against a real loopback HTTP server."""

from __future__ import annotations

import hashlib
import threading

import pytest
from datafiles import Route

from mnistlab.data import download
from mnistlab.errors import DataError, DownloadError
from mnistlab.files import sha256_file

BODY = bytes(range(256)) * 300
SHA = hashlib.sha256(BODY).hexdigest()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_good_file_is_downloaded_verified_and_renamed(http_server, tmp_path, capsys):
    http_server.routes["/f.bin"] = Route(BODY)
    seen = []
    dest = tmp_path / "cache" / "f.bin"
    path = download.fetch(dest, SHA, [http_server.url + "/f.bin"],
                          progress=lambda *a: seen.append(a))
    assert path == dest and dest.read_bytes() == BODY
    assert _leftovers(dest.parent) == []
    assert seen[0] == ("f.bin", 0, len(BODY)) and seen[-1] == ("f.bin", len(BODY), len(BODY))
    assert capsys.readouterr() == ("", "")  # the library never prints


def test_without_content_length_the_last_progress_call_gives_the_size(http_server, tmp_path):
    http_server.routes["/f.bin"] = Route(BODY, length=False)
    seen = []
    dest = tmp_path / "f.bin"
    download.fetch(dest, SHA, [http_server.url + "/f.bin"], progress=lambda *a: seen.append(a))
    assert dest.read_bytes() == BODY
    assert seen[0] == ("f.bin", 0, None) and seen[-2][2] is None
    assert seen[-1] == ("f.bin", len(BODY), len(BODY))


def test_wrong_hash_removes_the_file_and_says_so(http_server, tmp_path):
    http_server.routes["/f.bin"] = Route(b"not the file")
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="sha256 mismatch") as e:
        download.fetch(dest, SHA, [http_server.url + "/f.bin"])
    assert hashlib.sha256(b"not the file").hexdigest() in str(e.value)
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_truncated_transfer_is_an_error(http_server, tmp_path):
    http_server.routes["/f.bin"] = Route(BODY, extra_length=1000)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match=f"received {len(BODY)} of {len(BODY) + 1000} bytes"):
        download.fetch(dest, SHA, [http_server.url + "/f.bin"])
    assert not dest.exists() and _leftovers(tmp_path) == []


def test_server_error_is_reported_per_origin(http_server, tmp_path):
    http_server.routes["/f.bin"] = Route(status=500)
    with pytest.raises(DownloadError, match="HTTP 500"):
        download.fetch(tmp_path / "f.bin", SHA, [http_server.url + "/f.bin"])


def test_first_origin_down_second_used(http_server, dead_url, tmp_path):
    http_server.routes["/f.bin"] = Route(BODY)
    path = download.fetch(tmp_path / "f.bin", SHA, [dead_url + "/f.bin",
                                                     http_server.url + "/f.bin"])
    assert path.read_bytes() == BODY
    assert http_server.hits == {"/f.bin": 1}


def test_cache_hit_is_reverified_and_a_bad_cache_redownloaded(http_server, tmp_path):
    http_server.routes["/f.bin"] = Route(BODY)
    urls = [http_server.url + "/f.bin"]
    dest = download.fetch(tmp_path / "f.bin", SHA, urls)
    download.fetch(dest, SHA, urls)
    assert http_server.hits["/f.bin"] == 1  # good cache: no request
    dest.write_bytes(BODY[:-1] + b"X")  # corrupt the cached copy
    download.fetch(dest, SHA, urls)
    assert http_server.hits["/f.bin"] == 2
    assert dest.read_bytes() == BODY


def test_bad_cache_and_no_origin_leaves_no_bad_file(dead_url, tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")
    with pytest.raises(DownloadError):
        download.fetch(dest, SHA, [dead_url + "/f.bin"])
    assert not dest.exists()


def test_two_concurrent_downloads_both_end_verified(http_server, tmp_path):
    # The server holds both responses until both requests arrived, so the downloads overlap.
    http_server.routes["/f.bin"] = Route(BODY, barrier=threading.Barrier(2))
    dest = tmp_path / "cache" / "f.bin"
    results, errors = [], []

    def worker():
        try:
            results.append(download.fetch(dest, SHA, [http_server.url + "/f.bin"]))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == [] and results == [dest, dest]
    assert http_server.hits["/f.bin"] == 2
    assert sha256_file(dest) == SHA
    assert _leftovers(dest.parent) == []


def test_two_processes_downloading_at_once_both_end_verified(http_server, tmp_path):
    """Two real processes fetch the same file at the same moment (the server holds both answers
    until both requests arrived); each must end with the verified file and no leftovers."""
    import subprocess
    import sys

    http_server.routes["/f.bin"] = Route(BODY, barrier=threading.Barrier(2))
    dest = tmp_path / "cache" / "f.bin"
    code = (
        "import sys; from mnistlab.data import download\nfrom mnistlab.files import sha256_file\n"
        "p = download.fetch(sys.argv[1], sys.argv[2], [sys.argv[3]])\n"
        "print(sha256_file(p))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(dest), SHA, http_server.url + "/f.bin"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o.strip() for o, _ in outs] == [SHA, SHA]
    assert http_server.hits["/f.bin"] == 2
    assert sha256_file(dest) == SHA and _leftovers(dest.parent) == []


def test_offline_error_names_the_three_ways_out(dead_url, tmp_path):
    dest = tmp_path / "keras" / "datasets" / "mnist.npz"
    with pytest.raises(DownloadError) as e:
        download.fetch(dest, SHA, [dead_url + "/mnist.npz"])
    text = str(e.value)
    assert str(dest) in text and SHA in text
    assert "MNISTLAB_MIRRORS" in text and "data.mirrors" in text and "--data PATH" in text
    assert dead_url in text and "cannot connect" in text


def test_origins_order_and_url_forms(monkeypatch):
    monkeypatch.setenv("MNISTLAB_MIRRORS", "http://env.example/a/, http://env.example/b/x.npz")
    urls = download.origins("x.npz", "https://default/x.npz",
                            ["http://cfg.example/base", "http://cfg.example/full/x.npz"])
    assert urls == [
        "http://cfg.example/base/x.npz",
        "http://cfg.example/full/x.npz",
        "http://env.example/a/x.npz",
        "http://env.example/b/x.npz",
        "https://default/x.npz",
    ]


def test_origins_rejects_other_schemes():
    with pytest.raises(DataError, match="ftp"):
        download.origins("x.npz", "https://default/x.npz", ["ftp://host/"])


def test_cache_dir_follows_keras_home(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert download.cache_dir("fashion-mnist") == tmp_path / "datasets" / "fashion-mnist"
    monkeypatch.delenv("KERAS_HOME")
    assert download.cache_dir().parts[-2:] == (".keras", "datasets")


def test_cache_path_that_is_a_file_is_a_clear_error(http_server, tmp_path):
    (tmp_path / "blocker").write_text("a file where the cache folder should be")
    with pytest.raises(DownloadError, match="cannot create the cache folder"):
        download.fetch(tmp_path / "blocker" / "f.bin", SHA, [http_server.url + "/f.bin"])
