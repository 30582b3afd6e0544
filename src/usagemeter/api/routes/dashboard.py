"""The usage dashboard: static pages served by the API itself, charts by plotly.js from the installed plotly wheel.

Nothing is built or downloaded: the page, its script and style ship in this package
(`api/static/`), and plotly.js is read from the `plotly` Python package installed beside usagemeter.
The page calls the same API with the signed-in user's token, so it shows exactly what the
database's policies let that user see.
"""

from __future__ import annotations

from importlib import metadata, resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from usagemeter.api import problems
from usagemeter.api.deps import ServerDep

router = APIRouter(include_in_schema=False)
STATIC = resources.files("usagemeter.api") / "static"
PLOTLY_VERSION_MARK = "__PLOTLY_VERSION__"
# The page names plotly.js with the installed version (?v=), so a new plotly is a new URL and the
# old file may be cached for good; the page and the app's own assets are revalidated each time.
VENDOR_CACHE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


def plotly_js() -> Path:
    """plotly.min.js inside the installed plotly package."""
    return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))


class _RevalidatedFiles(StaticFiles):
    """The dashboard's script and style: answered with ETags and revalidated, so an upgrade shows at once."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = REVALIDATE
        return response


@router.get("/", response_class=HTMLResponse)
async def index() -> HTMLResponse:
    """The dashboard's page, naming the installed plotly.js by its version."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    page = page.replace(PLOTLY_VERSION_MARK, metadata.version("plotly"))
    return HTMLResponse(page, headers={"Cache-Control": REVALIDATE})


@router.get("/static/vendor/plotly.min.js")
async def plotly() -> FileResponse:
    return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": VENDOR_CACHE})


@router.get("/dashboard/demo-session")
async def demo_session(server: ServerDep) -> JSONResponse:
    """The demo user's token when the server runs with --demo, so the page signs in by itself; 404 otherwise."""
    token = server.config.demo_user_token
    if token is None:
        raise problems.Problem(404, "Not found", "the server is not running the demo", kind="not-found")
    return JSONResponse({"token": token}, headers={"Cache-Control": "no-store"})


def install(app: FastAPI) -> None:
    """Add the page, its assets and the demo session to `app`."""
    app.include_router(router)
    app.mount("/static/app", _RevalidatedFiles(directory=str(STATIC)), name="dashboard-static")
