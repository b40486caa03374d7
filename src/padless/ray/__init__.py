"""padless on Ray: Ray Data for offline jobs (:func:`classify`, :func:`embed`), Ray Serve for replicas and length tiers
(:func:`serve_app`). One more face over the engine and the batcher; the core never imports Ray.

Needs the optional extra ``padless[ray]`` (``ray[data,serve]==2.60.*``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["classify", "embed", "serve_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing padless.ray costs nothing until Ray is really used.
    if name in ("classify", "embed"):
        from padless.ray import data

        return getattr(data, name)
    if name == "serve_app":
        from padless.ray.serve import serve_app

        return serve_app
    raise AttributeError(name)
