"""The search page's JSON API (SimDeepDXF.py --serve) with FastAPI's test client on the
sample corpus: every endpoint, bad uploads, path traversal, concurrent queries, a
query while the gallery is still being embedded."""
from __future__ import annotations

import io
import re
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install -e '.[web]'")
from fastapi.testclient import TestClient  # noqa: E402

import SimDeepDXF  # noqa: E402
from config.sim_config import SimConfig  # noqa: E402
from dataset.make_sample_dxf import make_sample_corpus  # noqa: E402
from tests.test_similarity_cli import gf_checkpoint  # noqa: E402
from utils.retrieval.embedders import make_embedder  # noqa: E402
from utils.retrieval.web.app import create_app  # noqa: E402
from utils.retrieval.web.server import bind_message  # noqa: E402
from utils.retrieval.web.service import SearchService  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    """The sample corpus (2 revisions per family), a tiny GF checkpoint, and the service
    ``SimDeepDXF.py --serve`` would build over them (cache and thumbnails in tmp)."""
    root = tmp_path_factory.mktemp("web")
    archive = root / "archive"
    make_sample_corpus(archive, n_revisions=2)
    cfg = SimConfig(model_path=str(gf_checkpoint(root / "gf.pth")), gallery=[str(archive)],
                    cache_dir=str(root / "cache"), encodings=["none"], workers=1, serve=True)
    embedder = make_embedder(cfg.model_path, "auto", "cpu")
    def open_gallery(emb, progress):
        return SimDeepDXF.open_gallery(cfg, cfg.gallery, emb, quiet=True, on_progress=progress)

    service = SearchService(embedder, open_gallery, root / "cache" / "thumbnails",
        SimDeepDXF.describe_embedding(embedder), max_upload_bytes=2_000_000, default_topk=5)
    service.start(background=False)
    client = TestClient(create_app(service, render_in_background=False))
    return {"root": root, "archive": archive, "service": service, "client": client, "open": open_gallery,
            "files": sorted(archive.glob("*.dxf")), "listing": sorted(p.name for p in archive.rglob("*"))}


def _names(answer: dict) -> list[str]:
    return [r["name"] for r in answer["results"]]


def test_health_says_ready_with_the_embedding_and_the_gallery_size(site):
    body = site["client"].get("/api/health").json()
    assert body["state"] == "ready"
    assert body["drawings"] == len(site["files"]) > 10
    assert body["embedding"] == "gf" and "embedding: gf" in body["description"]


def test_drawings_are_sorted_paged_and_filtered(site):
    client = site["client"]
    first = client.get("/api/drawings", params={"limit": 5}).json()
    second = client.get("/api/drawings", params={"offset": 5, "limit": 5}).json()
    assert first["total"] == len(site["files"])
    assert len(first["names"]) == 5 and not set(first["names"]) & set(second["names"])
    assert first["names"] == sorted(first["names"], key=str.casefold)
    qfn = client.get("/api/drawings", params={"q": "qfn-A"}).json()
    assert qfn["names"] and all("qfn-a" in n.lower() for n in qfn["names"])
    assert client.get("/api/drawings", params={"limit": 0}).status_code == 400


def test_search_by_name_ranks_best_first_and_leaves_the_query_out(site):
    answer = site["client"].get("/api/search", params={"query": "QFN-a_rev0", "topk": 4}).json()
    scores = [r["similarity"] for r in answer["results"]]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    assert "QFN-a_rev0" not in _names(answer) and answer["left_out"] == ["QFN-a_rev0"]
    assert [r["rank"] for r in answer["results"]] == [1, 2, 3, 4]
    pcts = [r["percentile"] for r in answer["results"]]
    assert all(0 <= p <= 100 for p in pcts) and pcts == sorted(pcts, reverse=True)
    assert answer["results"][0]["thumbnail"] == f"/api/drawings/{quote(answer['results'][0]['name'], safe='')}" \
                                                "/thumbnail.png"
    assert answer["embedding"]["kind"] == "gf"


def test_the_features_floor_is_searched_on_request(site):
    client = site["client"]
    floor = client.get("/api/search", params={"query": "QFN-a_rev0", "topk": 5, "embedding": "features"}).json()
    model = client.get("/api/search", params={"query": "QFN-a_rev0", "topk": 5}).json()
    assert floor["embedding"]["kind"] == "features" and "standardized histogram" in floor["embedding"]["description"]
    assert [r["similarity"] for r in floor["results"]] != [r["similarity"] for r in model["results"]]
    bad = client.get("/api/search", params={"query": "QFN-a_rev0", "embedding": "magic"})
    assert bad.status_code == 400 and "unknown embedding 'magic'" in bad.json()["detail"]


def test_upload_of_a_gallery_drawing_finds_what_its_name_finds(site):
    path = site["archive"] / "QFN-a_rev1.dxf"
    with open(path, "rb") as fh:
        resp = site["client"].post("/api/search", files={"file": (path.name, fh, "application/dxf")},
                                   data={"topk": "3"})
    assert resp.status_code == 200, resp.text
    upload = resp.json()
    by_name = site["client"].get("/api/search", params={"query": "QFN-a_rev1", "topk": 3}).json()
    assert upload["query"] | {"thumbnail": None} == {"name": "QFN-a_rev1", "from": "upload", "thumbnail": None}
    assert upload["query"]["thumbnail"].startswith("data:image/png;base64,")
    assert _names(upload) == _names(by_name)
    assert [r["similarity"] for r in upload["results"]] == pytest.approx([r["similarity"] for r in by_name["results"]],
                                                                        abs=1e-5)
    assert upload["left_out"] == ["QFN-a_rev1"]  # the same content in the gallery is left out


def test_uploads_go_to_a_temporary_folder_that_is_removed_and_never_into_the_archive(site, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = site["files"][0]
    with open(path, "rb") as fh:
        resp = site["client"].post("/api/search?picture=0", files={"file": ("新 drawing (1).dxf", fh)})
    assert resp.status_code == 200, resp.text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("dxf-upload-")]
    assert sorted(p.name for p in site["archive"].rglob("*")) == site["listing"]


def _cli_reason(bad: Path, gallery: Path, capsys) -> str:
    """What ``SimDeepDXF.py --query BAD`` says is wrong with ``bad``."""
    code = SimDeepDXF.main(["--embedding", "features", "--gallery", str(gallery), "--query", str(bad)])
    err = capsys.readouterr().err
    assert code != 0
    return err.split(f"{bad}: ", 1)[1].strip()


@pytest.mark.parametrize("content, suffix", [(b"", ".dxf"), (b"0\nSECTION\n2\nENTITIES\n0\nLINE\n8\n", ".dxf"),
                                             (b"%PDF-1.4 not a drawing", ".dxf"), (b"hello", ".pdf")],
                         ids=["empty", "corrupt", "pdf-named-dxf", "not-dxf"])
def test_bad_uploads_get_400_with_the_reason_the_cli_gives(site, tmp_path, capsys, content, suffix):
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(content)
    resp = site["client"].post("/api/search", files={"file": (bad.name, io.BytesIO(content))})
    assert resp.status_code == 400
    detail = resp.json()["detail"]
    assert detail.startswith(f"cannot use {bad.name}: ")
    if suffix == ".dxf":  # the command line refuses another suffix before reading the file
        assert detail == f"cannot use {bad.name}: {_cli_reason(bad, site['archive'], capsys)}"
    else:
        assert "unsupported file type '.pdf'" in detail


def test_an_upload_over_the_cap_gets_413(site, monkeypatch):
    """Just over the cap: the request's length passes, the file read stops at the cap."""
    big = site["files"][0].read_bytes()
    monkeypatch.setattr(site["service"], "max_upload_bytes", len(big) - 100)
    resp = site["client"].post("/api/search", files={"file": ("big.dxf", io.BytesIO(big))})
    assert resp.status_code == 413 and "upload limit" in resp.json()["detail"]


def test_an_upload_far_over_the_cap_is_refused_by_its_length(site):
    resp = site["client"].post("/api/search", content=b"x" * 10, headers={
        "content-type": "multipart/form-data; boundary=x", "content-length": str(50_000_000)})
    assert resp.status_code == 413 and "(50.0 MB) is larger than the upload limit" in resp.json()["detail"]


def test_a_post_without_a_file_gets_400(site):
    resp = site["client"].post("/api/search", data={"topk": "3"})
    assert resp.status_code == 400 and "multipart field 'file'" in resp.json()["detail"]


@pytest.mark.parametrize("topk", ["0", "-1", "abc", "1000"])
def test_a_bad_topk_gets_400(site, topk):
    resp = site["client"].get("/api/search", params={"query": "QFN-a_rev0", "topk": topk})
    assert resp.status_code == 400 and "topk" in resp.json()["detail"]


def test_thumbnails_are_pngs_cached_beside_the_embeddings_not_in_the_archive(site):
    name = "BGA-like (基板)_rev0"
    resp = site["client"].get(f"/api/drawings/{quote(name, safe='')}/thumbnail.png")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert resp.content[:8] == b"\x89PNG\r\n\x1a\n"
    cached = list((site["root"] / "cache" / "thumbnails").glob("*-small.png"))
    assert any(p.read_bytes() == resp.content for p in cached)
    large = site["client"].get(f"/api/drawings/{quote(name, safe='')}/thumbnail.png", params={"size": "large"})
    assert large.status_code == 200 and len(large.content) > len(resp.content)
    assert not list(site["archive"].rglob("*.png"))
    assert site["client"].get(f"/api/drawings/{quote(name, safe='')}/thumbnail.png",
                              params={"size": "huge"}).status_code == 400


TRAVERSALS = ["..", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "/etc/passwd", "a/b",
              "QFN-a_rev0.dxf", "no such drawing", "%2e%2e", "..\\..\\windows"]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_names_that_are_paths_or_unknown_get_404_and_no_file(site, name):
    client = site["client"]
    for url in (f"/api/drawings/{name}/thumbnail.png", f"/api/search?query={name}", f"/api/pair?a={name}&b=QFN-a_rev0",
                f"/api/pair?a=QFN-a_rev0&b={name}"):
        resp = client.get(url)
        assert resp.status_code == 404, (url, resp.status_code)
        assert b"root:" not in resp.content and resp.headers["content-type"].startswith("application/json")


def test_pair_gives_the_similarity_of_the_search_and_where_it_falls(site):
    client = site["client"]
    answer = client.get("/api/search", params={"query": "QFN-a_rev0", "topk": 2}).json()
    hit = answer["results"][0]
    pair = client.get("/api/pair", params={"a": "QFN-a_rev0", "b": hit["name"]}).json()
    assert pair["similarity"] == pytest.approx(hit["similarity"], abs=1e-5)
    assert pair["percentile"] == pytest.approx(hit["percentile"], abs=1e-6)
    assert pair["reference"] == len(site["files"]) - 2
    assert set(pair["pictures"]) == {"QFN-a_rev0", hit["name"]}


def test_concurrent_queries_are_all_answered(site):
    client = site["client"]
    names = client.get("/api/drawings", params={"limit": 6}).json()["names"]
    alone = {n: _names(client.get("/api/search", params={"query": n, "topk": 3}).json()) for n in names}
    upload = site["files"][0]

    def by_name(n: str) -> tuple[str, list[str]]:
        resp = client.get("/api/search", params={"query": n, "topk": 3})
        assert resp.status_code == 200, resp.text
        return n, _names(resp.json())

    def by_upload(_i: int) -> int:
        with open(upload, "rb") as fh:
            return client.post("/api/search?picture=0", files={"file": (upload.name, fh)}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        named = [pool.submit(by_name, n) for n in names * 2]
        uploads = [pool.submit(by_upload, i) for i in range(4)]
        assert all(dict([f.result()])[n] == alone[n] for f, n in zip(named, names * 2))
        assert [f.result() for f in uploads] == [200] * 4


def test_a_query_while_embedding_says_still_embedding_n_of_m(site):
    release, building = threading.Event(), threading.Event()

    def slow_open(emb, progress):
        progress(3, 10)
        building.set()
        assert release.wait(30)
        return site["open"](emb, progress)

    service = SearchService(site["service"].embedder, slow_open, site["root"] / "thumbs2")
    with TestClient(create_app(service, render_in_background=False)) as client:
        assert building.wait(30)
        health = client.get("/api/health").json()
        assert health["state"] == "embedding" and (health["done"], health["total"]) == (3, 10)
        resp = client.get("/api/search", params={"query": "QFN-a_rev0"})
        assert resp.status_code == 503
        assert "still embedding the gallery: 3 of 10 drawings" in resp.json()["detail"]
        with open(site["files"][0], "rb") as fh:
            up = client.post("/api/search", files={"file": ("q.dxf", fh)})
        assert up.status_code == 503 and "3 of 10" in up.json()["detail"]
        release.set()
        assert service.wait(30)
        assert client.get("/api/search", params={"query": "QFN-a_rev0"}).status_code == 200


def test_a_gallery_that_cannot_be_opened_is_reported_not_hidden(site):
    def broken(emb, progress):
        raise SimDeepDXF.UsageError("empty gallery: no .dxf/.h5 files under nowhere")

    service = SearchService(site["service"].embedder, broken, site["root"] / "thumbs3")
    with TestClient(create_app(service, render_in_background=False)) as client:
        service.wait(30)
        assert client.get("/api/health").json()["state"] == "failed"
        resp = client.get("/api/search", params={"query": "x"})
        assert resp.status_code == 503 and "empty gallery" in resp.json()["detail"]


def test_the_page_and_the_openapi_docs_are_served(site):
    client = site["client"]
    page = client.get("/", params={"query": "QFN-a_rev0", "topk": 3})
    assert page.status_code == 200 and "DXF drawing search" in page.text
    assert "embedding: gf" in page.text and "/static/search.js" in page.text
    assert client.get("/static/search.js").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search", "/api/drawings", "/api/drawings/{name}/thumbnail.png", "/api/pair",
            "/api/health"} <= set(paths)
    assert "multipart/form-data" in paths["/api/search"]["post"]["requestBody"]["content"]


def test_binds_to_this_machine_unless_told_and_says_so():
    assert SimConfig().host == "127.0.0.1"
    assert "only this machine" in bind_message("127.0.0.1", 8000)
    assert re.search(r"bound to 0\.0\.0\.0: other machines", bind_message("0.0.0.0", 8000))


def test_serve_without_a_gallery_is_a_usage_error(capsys):
    assert SimDeepDXF.main(["--serve", "--embedding", "features"]) == 2
    assert "--serve needs --gallery" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    yield
    shutil.rmtree(tmp_path / "xdg", ignore_errors=True)


def test_build_gallery_reports_progress_and_a_raising_callback_stops_it_keeping_what_was_done(tmp_path):
    from tests.test_similarity_cli import write_drawing
    from utils.retrieval.cache import EmbeddingCache
    from utils.retrieval.embedders import floor_embedder
    from utils.retrieval.gallery import build_gallery, collect_files

    for k in range(4):
        write_drawing(tmp_path / "g" / f"d{k}.dxf", n_lines=2 + k, n_circles=1 + k)
    files = collect_files([tmp_path / "g"])
    calls: list[tuple[int, int]] = []

    class Stop(Exception):
        pass

    def stop_at_two(done: int, total: int) -> None:
        calls.append((done, total))
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        build_gallery(files, floor_embedder("features"), EmbeddingCache(tmp_path / "cache"), quiet=True,
                      on_progress=stop_at_two)
    assert calls == [(0, 4), (1, 4), (2, 4)]
    calls.clear()
    gallery = build_gallery(files, floor_embedder("features"), EmbeddingCache(tmp_path / "cache"), quiet=True,
                            on_progress=lambda done, total: calls.append((done, total)))
    assert len(gallery) == 4
    assert calls[0][1] < 4 and calls[-1][0] == calls[-1][1]  # what was encoded before the stop was kept


def test_the_dxf_serve_command_is_simdeepdxf_serve(capsys):
    assert SimDeepDXF.serve_main(["--embedding", "features"]) == 2
    assert "--serve needs --gallery" in capsys.readouterr().err
