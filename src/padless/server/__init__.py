"""The online server: FastAPI routes (``app``), the service behind them (``service``), metrics, and the runner."""
