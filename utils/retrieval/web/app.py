"""The routes of the search page and its JSON API (FastAPI), over a :class:`SearchService`.

=======  ======================================  =============================================
method   path                                    answer
=======  ======================================  =============================================
GET      ``/``                                   the page (``/?query=NAME&topk=K`` runs a query)
POST     ``/api/search``                         top-k of an uploaded DXF (multipart ``file``,
                                                 ``topk``, ``embedding``)
GET      ``/api/search?query=NAME&topk=K``       top-k of a gallery drawing
GET      ``/api/drawings?offset&limit&q``        gallery names, paged (``q``: containing)
GET      ``/api/drawings/{name}/thumbnail.png``  its picture (``?size=large`` for the big one)
GET      ``/api/pair?a=NAME&b=NAME``             similarity of two gallery drawings
GET      ``/api/health``                         ready, or how far the embedding has come
=======  ======================================  =============================================

Errors are JSON ``{"detail": "..."}`` with the status of :class:`ServiceError`: 400 a bad
drawing or parameter, 404 an unknown name, 413 an upload over the cap, 503 while the
gallery is being embedded. OpenAPI docs at ``/docs``.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from model.floors import FLOOR_KINDS
from utils.retrieval.web.service import COMPARE_FLOOR, BadInput, NotReady, SearchService, ServiceError, TooLarge

HERE = Path(__file__).resolve().parent
MULTIPART_SLACK = 64 << 10  # form boundaries and headers around the file itself

_UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "the drawing (.dxf)"},
        "topk": {"type": "integer", "description": "how many matches (default: the server's --topk)"},
        "embedding": {"type": "string", "description": "auto (the served embedding) or a non-learned floor: "
                                                       + ", ".join(FLOOR_KINDS)}}}}}}}


def _int(value: object, what: str) -> Optional[int]:
    """A whole-number parameter (None when not given)."""
    if value is None or value == "":
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadInput(f"{what} must be a whole number, got {value!r}") from None


async def _search_upload(service: SearchService, request: Request) -> dict:
    """``POST /api/search``: the top-k of an uploaded drawing (multipart field ``file``); a body
    over the upload limit is refused before it is read, and so is one the gallery is not ready for."""
    length = _int(request.headers.get("content-length"), "Content-Length")
    if length is not None and length > service.max_upload_bytes + MULTIPART_SLACK:
        raise TooLarge(f"the upload ({length / 1e6:.1f} MB) is larger than the upload limit of "
                       f"{service.max_upload_bytes / 1e6:g} MB (--max_upload_mb)")
    service.gallery()  # 503 before reading an upload it could not answer
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as err:  # starlette's MultiPartException and friends: a malformed body
        raise BadInput(f"cannot read the upload: {err} (send multipart/form-data with a field 'file')") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadInput("no file: upload a .dxf drawing as the multipart field 'file'")
        return await run_in_threadpool(
            service.search_upload, upload.file.read, upload.filename or "", _int(form.get("topk"), "topk"),
            str(form.get("embedding") or ""), request.query_params.get("picture", "1") != "0")
    finally:
        await form.close()


def create_app(service: SearchService, render_in_background: bool = True) -> FastAPI:
    """The FastAPI application serving ``service`` (started, if not yet, when the app starts).

    Args:
        render_in_background: after the gallery is ready, render the thumbnails not yet
            cached, one at a time, in a background thread.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start_once()
        if render_in_background:
            import threading

            threading.Thread(target=service.render_all, name="thumbnails", daemon=True).start()
        yield
        service.stop()

    app = FastAPI(title="DXF drawing search", lifespan=lifespan,
                  description="Search an archive of DXF drawings for similar drawings (SimDeepDXF.py --serve).")
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, err: ServiceError) -> JSONResponse:
        body: dict = {"detail": err.message}
        if isinstance(err, NotReady):
            body["status"] = service.status()
        return JSONResponse(body, status_code=err.status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(request, "index.html", {
            "description": service.description, "topk": service.default_topk, "floor": COMPARE_FLOOR,
            "served": service.embedder.kind,
            "max_upload_mb": service.max_upload_bytes / 1e6})

    @app.get("/api/health", summary="Ready, or how far the gallery's embedding has come")
    async def health() -> dict:
        return service.status()

    @app.get("/api/drawings", summary="Gallery drawing names, sorted and paged")
    def drawings(offset: int = 0, limit: int = 100, q: str = "") -> dict:
        return service.names(offset, limit, q)

    @app.get("/api/drawings/{name}/thumbnail.png", summary="Picture of a gallery drawing",
             response_class=FileResponse)
    def thumbnail(name: str, size: str = "small") -> FileResponse:
        return FileResponse(service.thumbnail(name, size), media_type="image/png",
                            headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/search", summary="Top-k of a gallery drawing")
    def search_name(query: Optional[str] = None, topk: Optional[str] = None, embedding: str = "") -> dict:
        if not query:
            raise BadInput("give ?query=NAME (a gallery drawing; GET /api/drawings lists them) or POST a file")
        return service.search_name(query, _int(topk, "topk"), embedding)

    @app.post("/api/search", summary="Top-k of an uploaded drawing", openapi_extra=_UPLOAD_SCHEMA)
    async def search_upload(request: Request) -> dict:
        return await _search_upload(service, request)

    @app.get("/api/pair", summary="Similarity of two gallery drawings")
    def pair(a: str, b: str) -> dict:
        return service.pair(a, b)

    return app


__all__ = ["create_app"]
