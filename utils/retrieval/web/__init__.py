"""The search page and JSON API of ``SimDeepDXF.py --serve`` (needs the ``web`` extra).

``service.py`` searches one gallery (framework-free), ``app.py`` holds the FastAPI
routes, ``server.py`` runs them with uvicorn; ``templates/`` and ``static/`` are the
page (plain HTML, CSS and JavaScript: no build step).
"""
