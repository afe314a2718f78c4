"""`stockpilot serve`: the HTTP API and the chat page (uvicorn)."""

from __future__ import annotations

import logging

import typer

from api.cli_common import JsonOpt, console, guarded, print_json


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


@guarded
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
    as_json: bool = JsonOpt,
) -> None:
    """Serve the API and the chat page; prints the URL and where the API key is kept."""
    import uvicorn

    from api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app()
    url = f"http://{host}:{port}"
    key_file = app.state.api_key_file
    if as_json:
        print_json({"url": url, "docs": f"{url}/docs", "api_key_file": key_file})
    else:
        console.print(f"[bold]StockPilot[/] chat page and API at {url} (OpenAPI: {url}/docs)", soft_wrap=True)
        where = f"in {key_file}" if key_file else "from STOCKPILOT_API_KEY"
        console.print(f"API key (X-API-Key header; paste it into the page once): {where}", soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
