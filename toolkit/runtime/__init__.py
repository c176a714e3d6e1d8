"""The Master/Worker runtime (asyncio)."""
