"""ponder's HTTP edge: FastAPI app, wire models, planner, SSE, settings, CLI."""
