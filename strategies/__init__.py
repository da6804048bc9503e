"""ponder's test-time-compute library.

Strategies turn a :class:`~strategies.plan.Plan` into a stream of events by
driving an :class:`~strategies.engine.Engine`. Nothing here imports FastAPI or
vLLM: the server adapts both sides.
"""
