"""The search service behind the page and the JSON API: one gallery, searched by many.

:class:`SearchService` owns one gallery (opened in a background thread, so the server
answers at once and says how far the embedding has come), the non-learned floors asked
for by name, and the thumbnails (rendered on first request, one drawing at a time, into
``<cache folder>/thumbnails/``, never into the archive). The gallery's cache is an sqlite
database that one thread may use, so one worker thread (the owner) opens the gallery
and does every search in turn; drawings are parsed and pictures drawn outside it, so
several requests at once share the work. It knows nothing of HTTP:
``utils/retrieval/web/app.py`` turns its answers into JSON and its errors into status
codes (:attr:`ServiceError.status`).

How a gallery is opened is given, not decided here: ``SimDeepDXF.py --serve`` passes its
own ``open_gallery`` (collect, encode, embed, cache, report), so the page searches
exactly the gallery the command line would.
"""
from __future__ import annotations

import base64
import hashlib
import re
import shutil
import sys
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar
from urllib.parse import quote

import numpy as np

from dataset.dxf_read import DrawingError, drawing_name
from model.floors import FLOOR_KINDS, FLOOR_LABELS
from utils.ranking import Method, percentile_among, percentile_of, similarity_matrix
from utils.retrieval.embedders import Embedder, floor_embedder
from utils.retrieval.encodings import DrawingEncoding, load_drawing
from utils.retrieval.gallery import Gallery

#: ``open_gallery(embedder, on_progress)``: the gallery of the served folders for one
#: embedding; ``on_progress(done, total)`` hears how many drawings were embedded so far.
OpenGallery = Callable[[Embedder, Optional[Callable[[int, int], None]]], Gallery]

#: the floor shown beside the model on request: the strongest floor is unknown without
#: labels; the standardized features floor is the one every evaluation reports first
COMPARE_FLOOR = "features"
THUMBNAIL_SIZES = {"small": 320, "large": 900}
UPLOAD_CHUNK = 1 << 20
T = TypeVar("T")


class ServiceError(Exception):
    """A request the service cannot answer; ``status`` is the HTTP status that says why."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(ServiceError):
    """A drawing or parameter that cannot be used (400)."""


class NotFound(ServiceError):
    """No gallery drawing of that name (404)."""

    status = 404


class TooLarge(ServiceError):
    """An upload over the size cap (413)."""

    status = 413


class NotReady(ServiceError):
    """The gallery is still being embedded, or could not be opened (503)."""

    status = 503


class _Stopped(Exception):
    """Raised from the progress callback to stop a background build when the server stops."""


class SearchService:
    """Searches one gallery for the page and the API; safe to call from many threads.

    Args:
        embedder: the served embedding.
        open_gallery: opens the gallery for an embedder (:data:`OpenGallery`).
        thumb_dir: where thumbnails are kept (``<cache folder>/thumbnails``).
        description: one line naming the embedding and why it was chosen.
        method: cosine (similarity) or euclidean (ranked by minus the distance).
        max_len: entities kept per uploaded drawing.
        max_upload_bytes: the largest upload accepted (larger: :class:`TooLarge`).
        default_topk: results when a request names no ``topk``.
    """

    def __init__(self, embedder: Embedder, open_gallery: OpenGallery, thumb_dir: str | Path, description: str = "",
                 method: Method = "cosine", max_len: int = 50_000, max_upload_bytes: int = 50 << 20,
                 default_topk: int = 5, max_topk: int = 100) -> None:
        self.embedder, self._open = embedder, open_gallery
        self.thumb_dir = Path(thumb_dir)
        self.description = description or f"embedding: {embedder.kind}"
        self.method, self.max_len = method, max_len
        self.max_upload_bytes, self.default_topk, self.max_topk = max_upload_bytes, default_topk, max_topk
        self._gallery: Optional[Gallery] = None
        self._index: dict[str, int] = {}
        self._sorted: list[str] = []
        self._floors: dict[str, Gallery] = {}
        self._error: Optional[str] = None
        self._progress = (0, 0)
        self._stop = threading.Event()
        self._owner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gallery")  # the cache's one thread
        self._build_future: Optional[Future] = None
        self._render_lock = threading.Lock()  # one thumbnail rendered at a time

    # ------------------------------------------------------------ lifecycle
    def start(self, background: bool = True) -> "SearchService":
        """Open the gallery in the owner thread: in the background (the server answers
        meanwhile), or wait for it."""
        if self._build_future is None:
            self._build_future = self._owner.submit(self._build)
        if not background:
            self._build_future.result()
        return self

    def start_once(self) -> None:
        """:meth:`start` in the background unless the build was started already."""
        self.start(background=True)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for the background build; True when it has finished (ready or failed)."""
        if self._build_future is None:
            return True
        try:
            self._build_future.result(timeout)
        except FutureTimeout:
            return False
        return True

    def stop(self) -> None:
        """Stop a build still running (what was embedded stays in the cache) and the owner thread."""
        self._stop.set()
        self._owner.shutdown(wait=False, cancel_futures=True)

    def _in_owner(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the owner thread (the one that may use the gallery's cache)."""
        try:
            future = self._owner.submit(fn, *args)
        except RuntimeError:  # shut down
            raise NotReady("the server is stopping") from None
        return future.result()

    def _on_progress(self, done: int, total: int) -> None:
        self._progress = (done, total)
        if self._stop.is_set():
            raise _Stopped()

    def _build(self) -> None:
        try:
            gallery = self._open(self.embedder, self._on_progress)
        except _Stopped:
            self._error = "the server stopped while the gallery was being embedded"
            return
        except Exception as err:  # reported by /api/health and every search, not lost in a thread
            self._error = f"the gallery could not be opened: {err}"
            print(f"error: {self._error}", file=sys.stderr)
            return
        self._index = {name: i for i, name in enumerate(gallery.names)}
        self._sorted = sorted(gallery.names, key=str.casefold)
        self._gallery = gallery
        print(f"ready: {len(gallery)} drawings", file=sys.stderr, flush=True)

    def status(self) -> dict:
        """``{"state": "embedding"|"ready"|"failed", "done", "total", "drawings", "embedding", "message"}``."""
        done, total = self._progress
        if self._gallery is not None:
            state, message = "ready", f"{len(self._gallery)} drawings"
        elif self._error is not None:
            state, message = "failed", self._error
        else:
            state, message = "embedding", self._embedding_message()
        return {"state": state, "done": done, "total": total, "message": message,
                "drawings": len(self._gallery) if self._gallery is not None else None,
                "skipped": len(self._gallery.skipped) if self._gallery is not None else None,
                "embedding": self.embedder.kind, "description": self.description, "method": self.method}

    def _embedding_message(self) -> str:
        done, total = self._progress
        if total:
            return f"still embedding the gallery: {done} of {total} drawings done; try again in a moment"
        return "still opening the gallery (reading the cache); try again in a moment"

    def gallery(self) -> Gallery:
        """The served gallery.

        Raises:
            NotReady: still embedding ("still embedding N of M") or it failed (why).
        """
        if self._gallery is not None:
            return self._gallery
        raise NotReady(self._error or self._embedding_message())

    # ------------------------------------------------------------ names
    def index_of(self, name: str) -> int:
        """The gallery index of drawing ``name``; only names of the gallery are known (a
        path, ``..`` or a slash is no name of it).

        Raises:
            NotFound: no such drawing.
        """
        self.gallery()  # NotReady while embedding
        i = self._index.get(name)
        if i is None:
            raise NotFound(f"no drawing named {name!r} in the gallery")
        return i

    def names(self, offset: int = 0, limit: int = 100, contains: str = "") -> dict:
        """A page of gallery names (sorted), optionally those containing ``contains`` (any case)."""
        if offset < 0 or limit < 1:
            raise BadInput(f"offset must be >= 0 and limit >= 1, got offset={offset}, limit={limit}")
        self.gallery()
        names = self._sorted
        if contains:
            needle = contains.casefold()
            names = [n for n in names if needle in n.casefold()]
        return {"total": len(names), "offset": offset, "limit": limit, "names": names[offset:offset + limit]}

    # ------------------------------------------------------------ search
    def _check_embedding(self, embedding: str) -> None:
        if embedding not in ("", "auto", self.embedder.kind) and embedding not in FLOOR_KINDS:
            raise BadInput(f"unknown embedding {embedding!r}: use auto (the served {self.embedder.kind}) or one "
                           f"of the non-learned floors {', '.join(FLOOR_KINDS)}")

    def _searched(self, embedding: str) -> Gallery:
        """(Owner thread.) The gallery of ``embedding``: the served one (``""``, ``auto`` or
        its kind), or a non-learned floor, opened on first use (the encodings are cached: no
        DXF is parsed again)."""
        gallery = self.gallery()
        self._check_embedding(embedding)
        if embedding in ("", "auto", self.embedder.kind):
            return gallery
        if embedding not in self._floors:
            self._floors[embedding] = self._open(floor_embedder(embedding), None)
        return self._floors[embedding]

    def _topk(self, k: Optional[int]) -> int:
        k = self.default_topk if k is None else k
        if not 1 <= k <= self.max_topk:
            raise BadInput(f"topk must be between 1 and {self.max_topk}, got {k}")
        return k

    def _results(self, gallery: Gallery, query: np.ndarray, k: int, same: set[int]) -> list[dict]:
        """The top-k of the compared vector ``query: [D]``, each with where its score falls
        among the query's scores with the rest of the gallery (pair mode's reference)."""
        hits = gallery.topk(query, k, self.method, same)
        scores = similarity_matrix(query[None], gallery.vectors, self.method)[0]  # once for every match
        others = np.ones(len(gallery), dtype=bool)
        others[list(same)] = False
        out = []
        for rank, (i, score) in enumerate(hits, 1):
            others[i] = False
            pct = percentile_of(score, scores[others])
            others[i] = True
            out.append({"rank": rank, "name": gallery.names[i], "similarity": round(float(score), 6),
                        "percentile": None if np.isnan(pct) else round(float(pct), 2),
                        "thumbnail": thumbnail_url(gallery.names[i])})
        return out

    def _answer(self, gallery: Gallery, query: dict, results: list[dict], same: set[int]) -> dict:
        embedder = gallery.embedder
        return {"query": query, "method": self.method,
                "score": "cosine similarity" if self.method == "cosine" else "minus the euclidean distance",
                "embedding": {"kind": embedder.kind, "label": embedder.label,
                              "description": self.description if embedder is self.embedder
                              else f"embedding: {embedder.kind} ({FLOOR_LABELS.get(embedder.kind, '')})"},
                "gallery_size": len(gallery), "left_out": sorted(gallery.names[i] for i in same),
                "results": results}

    def search_name(self, name: str, topk: Optional[int] = None, embedding: str = "") -> dict:
        """The top-k of gallery drawing ``name`` (itself and copies of it left out)."""
        k = self._topk(topk)
        self.index_of(name)
        self._check_embedding(embedding)
        return self._in_owner(self._search_name, name, k, embedding)

    def _search_name(self, name: str, k: int, embedding: str) -> dict:
        gallery = self._searched(embedding)
        i = self._index_in(gallery, name)
        same = gallery.members_like(gallery.paths[i]) | {i}
        results = self._results(gallery, gallery.vectors[i], k, same)
        return self._answer(gallery, {"name": name, "from": "gallery", "thumbnail": thumbnail_url(name)},
                            results, same)

    def _index_in(self, gallery: Gallery, name: str) -> int:
        i = self.index_of(name)
        if gallery is self._gallery:
            return i
        try:  # a floor's gallery may have skipped drawings the served one has
            return gallery.names.index(name)
        except ValueError:
            raise BadInput(f"{name!r} is not in the {gallery.embedder.kind} floor's gallery "
                           "(it could not be encoded for that embedding)") from None

    def search_file(self, path: str | Path, name: str, topk: Optional[int] = None, embedding: str = "") -> dict:
        """The top-k of the drawing at ``path`` (gallery drawings with its content left out).

        Raises:
            BadInput: not a drawing, empty, corrupt or unusable for the embedding (the reason
                the command line gives: ``cannot use NAME: why``).
        """
        k = self._topk(topk)
        self._check_embedding(embedding)
        self.gallery()
        try:
            enc = load_drawing(path, self.max_len)  # parsed here: several uploads at once share the work
        except DrawingError as err:
            raise BadInput(f"cannot use {name}: {err.reason}") from None
        return self._in_owner(self._search_drawing, enc, Path(path), name, k, embedding)

    def _search_drawing(self, enc: DrawingEncoding, path: Path, name: str, k: int, embedding: str) -> dict:
        gallery = self._searched(embedding)
        try:
            gallery.embedder.check(enc)
        except DrawingError as err:
            raise BadInput(f"cannot use {name}: {err.reason}") from None
        query = gallery.final(gallery.embedder.embed([enc]))[0]
        same = gallery.members_like(path)
        return self._answer(gallery, {"name": drawing_name(name), "from": "upload"},
                            self._results(gallery, query, k, same), same)

    def search_upload(self, chunks: Callable[[int], bytes], filename: str, topk: Optional[int] = None,
                      embedding: str = "", picture: bool = True) -> dict:
        """:meth:`search_file` of an upload read by ``chunks(size)`` (b"" at its end).

        The upload is written into a temporary folder removed after the query (nothing
        reaches the archive or the cache's thumbnails); it is read at most
        ``max_upload_bytes + 1`` bytes far. With ``picture``, the answer's ``query``
        holds a thumbnail of it as a ``data:`` URL.

        Raises:
            TooLarge: over ``max_upload_bytes``.
            BadInput: no file name, an empty file, or what :meth:`search_file` raises.
        """
        name = Path((filename or "").replace("\\", "/")).name
        if not name:
            raise BadInput("no file: upload a .dxf drawing as the multipart field 'file'")
        self.gallery()  # not ready: say so before reading the upload
        folder = Path(tempfile.mkdtemp(prefix="dxf-upload-"))
        try:
            suffix = Path(name).suffix.lower()
            path = folder / ("upload" + (suffix if re.fullmatch(r"\.[a-z0-9]{1,10}", suffix) else ".unknown"))
            size = 0
            with open(path, "wb") as fh:
                while True:
                    block = chunks(UPLOAD_CHUNK)
                    if not block:
                        break
                    size += len(block)
                    if size > self.max_upload_bytes:
                        raise TooLarge(f"{name} is larger than the upload limit of "
                                       f"{self.max_upload_bytes / 1e6:g} MB (--max_upload_mb)")
                    fh.write(block)
            if size == 0:
                raise BadInput(f"cannot use {name}: empty file")
            answer = self.search_file(path, name, topk, embedding)
            if picture:
                answer["query"]["thumbnail"] = self._picture_url(path)
            return answer
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _picture_url(self, path: Path) -> Optional[str]:
        """A ``data:`` URL of a thumbnail of the drawing at ``path`` (None if it cannot be drawn)."""
        from utils.retrieval.render import render_thumbnail

        out = path.with_suffix(".png")
        try:
            with self._render_lock:
                render_thumbnail(path, out, THUMBNAIL_SIZES["large"])
        except Exception as err:  # the search answer stands without the picture; say why in the log
            print(f"warning: cannot draw the uploaded drawing: {type(err).__name__}: {err}", file=sys.stderr)
            return None
        return "data:image/png;base64," + base64.b64encode(out.read_bytes()).decode("ascii")

    def pair(self, a: str, b: str) -> dict:
        """Similarity of gallery drawings ``a`` and ``b``, placed among ``a``'s similarities
        to the rest of the gallery (without copies of either)."""
        i, j = self.index_of(a), self.index_of(b)
        return self._in_owner(self._pair, a, b, i, j)

    def _pair(self, a: str, b: str, i: int, j: int) -> dict:
        gallery = self.gallery()
        vec = gallery.vectors
        sim = float(similarity_matrix(vec[i:i + 1], vec[j:j + 1], self.method)[0, 0])
        same = gallery.members_like(gallery.paths[i]) | gallery.members_like(gallery.paths[j]) | {i, j}
        others = np.array(sorted(set(range(len(gallery))) - same), dtype=np.int64)
        pct = percentile_among(sim, vec[i], vec[others], self.method)
        return {"a": a, "b": b, "similarity": round(sim, 6), "method": self.method,
                "percentile": None if np.isnan(pct) else round(float(pct), 2), "reference": len(others),
                "embedding": gallery.embedder.kind,
                "pictures": {a: thumbnail_url(a, "large"), b: thumbnail_url(b, "large")}}

    # ------------------------------------------------------------ thumbnails
    def thumbnail(self, name: str, size: str = "small") -> Path:
        """The PNG of gallery drawing ``name``, rendered on first request and kept as
        ``<thumb_dir>/<content key>-<size>.png``.

        Raises:
            NotFound: no such drawing, or its DXF source is gone or cannot be drawn.
        """
        if size not in THUMBNAIL_SIZES:
            raise BadInput(f"size must be one of {', '.join(THUMBNAIL_SIZES)}, got {size!r}")
        gallery = self.gallery()
        i = self.index_of(name)
        key = gallery.keys[i] or "name-" + hashlib.sha1(name.encode("utf-8")).hexdigest()
        out = self.thumb_dir / f"{key}-{size}.png"
        if out.is_file():
            return out
        from utils.retrieval.render import render_thumbnail

        source = self._in_owner(gallery.source, i)
        if source is None or not Path(source).is_file():
            raise NotFound(f"{name}: its DXF source is not available to draw")
        with self._render_lock:
            if not out.is_file():  # another request may have drawn it meanwhile
                try:
                    render_thumbnail(source, out, THUMBNAIL_SIZES[size])
                except Exception as err:  # one drawing that cannot be drawn: a 404 naming why
                    raise NotFound(f"{name}: cannot be drawn ({type(err).__name__}: {err})") from None
        return out

    def render_all(self) -> None:
        """Render every missing small thumbnail, one at a time (a background task after the
        build; a page asks for its own thumbnails and never waits for this)."""
        if not self.wait(None) or self._gallery is None:
            return
        for name in self._gallery.names:
            if self._stop.is_set():
                return
            try:
                self.thumbnail(name)
            except ServiceError as err:
                print(f"warning: no thumbnail: {err.message}", file=sys.stderr)


def thumbnail_url(name: str, size: str = "small") -> str:
    """The API path of a gallery drawing's thumbnail."""
    return f"/api/drawings/{quote(name, safe='')}/thumbnail.png" + ("" if size == "small" else f"?size={size}")


__all__ = ["SearchService", "ServiceError", "BadInput", "NotFound", "TooLarge", "NotReady", "OpenGallery",
           "COMPARE_FLOOR", "THUMBNAIL_SIZES", "thumbnail_url"]
