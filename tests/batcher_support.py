"""Driving :class:`padless.batcher.Batcher` with fake forward functions (tests/unit and tests/component)."""

from __future__ import annotations

import asyncio


class ForwardStarted:
    """Set by a fake forward when it starts (in the batcher's forward thread), awaited by the test in its event loop,
    so a test knows a batch is in the forward pass instead of sleeping and hoping. Create it inside the running loop.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def set(self) -> None:
        """Safe from any thread (a no-op once the test's loop has closed)."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float = 5.0) -> None:
        """Return once set; :class:`TimeoutError` after ``timeout`` seconds."""
        await asyncio.wait_for(self._event.wait(), timeout)
