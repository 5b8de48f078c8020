"""Run the search page with uvicorn: ``SimDeepDXF.py --serve`` ends here."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

import uvicorn

from utils.ranking import Method
from utils.retrieval.embedders import Embedder
from utils.retrieval.web.app import create_app
from utils.retrieval.web.service import OpenGallery, SearchService

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def bind_message(host: str, port: int) -> str:
    """The line that says where the page is and who can reach it."""
    shown = f"[{host}]" if ":" in host else host
    who = ("only this machine can open it (--host 0.0.0.0 lets other machines in)" if host in LOCAL_HOSTS
           else f"bound to {host}: other machines on the network can open it (no login: trusted networks only)")
    return f"serving the search page at http://{shown}:{port}/ ({who}); API docs at /docs; Ctrl-C stops it"


def serve(open_gallery: OpenGallery, embedder: Embedder, thumb_dir: Optional[Path], description: str,
          host: str = "127.0.0.1", port: int = 8000, method: Method = "cosine", max_len: int = 50_000,
          max_upload_mb: float = 50.0, topk: int = 5) -> None:
    """Serve the page and API until Ctrl-C; the gallery is opened in the background.

    Args:
        open_gallery: ``(embedder, on_progress) -> Gallery`` (``SimDeepDXF.open_gallery``).
        thumb_dir: where thumbnails are kept; None: a temporary folder removed at the end.
    """
    temporary = thumb_dir is None
    folder = Path(tempfile.mkdtemp(prefix="dxf-thumbnails-")) if temporary else Path(thumb_dir)
    service = SearchService(embedder, open_gallery, folder, description, method=method, max_len=max_len,
                            max_upload_bytes=int(max_upload_mb * 1e6), default_topk=topk)
    print(bind_message(host, port), flush=True)
    print(f"thumbnails: {folder}" + (" (temporary: --no-cache)" if temporary else ""), flush=True)
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
    finally:
        service.stop()
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        print("server stopped", file=sys.stderr, flush=True)


__all__ = ["serve", "bind_message", "LOCAL_HOSTS"]
