"""Stand-in for aiohttp.get of the original README (no network here)."""
import asyncio


async def get(url):
    await asyncio.sleep(0.01)
    return {"url": url, "status": 200}
