"""The `stockpilot` command line (Typer); each area registers its commands from its own module."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="stockpilot",
    help="StockPilot: demand forecasts, inventory numbers and a guarded procurement assistant.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules, each exposing register(app).
COMMAND_MODULES: tuple[str, ...] = (
    "api.cli_forecast",
    "api.cli_inventory",
    "api.cli_customers",
    "api.cli_pipeline",
    "api.cli_serve",
    "api.cli_assistant",
    "api.cli_report",
    "api.cli_llm",
)


def _register_all() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main() -> None:
    app()
