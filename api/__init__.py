"""Front doors of StockPilot: command line, HTTP API, chat page and reports."""
