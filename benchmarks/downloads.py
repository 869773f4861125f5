"""Attachments at once: 20 users each attach 5 files of 40 MB (valid PNGs) at the same moment, served from a
loopback aiohttp server in its own process. Each message goes the adapters' way: `Core.check_attachments`
(count, declared sizes) before any download, then `decode_attachments`, each file fetched under a
`Core.downloading()` slot (IMAGEBOT_MAX_DOWNLOADS, default 8) and read with the 50 MB cap as the adapters read
it, and decoded; the decoded request is then let go (what a job does with it is measured elsewhere).

Printed: peak_rss_mb of this process, rss_budget_mb = downloads in flight x 2 x 50 MB + 200 MB, the most
downloads the server saw at once, and the wall time. Target: peak_rss_mb <= rss_budget_mb. Last line: JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks._common import free_port, peak_rss_mb

MB = 1_000_000


def _png(megabytes: int) -> bytes:
    """A valid PNG of about `megabytes` MB that does not compress (noise), well under the 36 MP decode limit."""
    import io

    from PIL import Image

    side = int((megabytes * MB / 3) ** 0.5)
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=0)
    return out.getvalue()


def serve(port: int, megabytes: int) -> None:
    """The file host (its own process): GET /f/<n> answers the same PNG; /stats says how many at once at most."""
    from aiohttp import web

    body = _png(megabytes)
    state = {"now": 0, "peak": 0, "served": 0}

    async def file(request: web.Request) -> web.StreamResponse:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        try:
            response = web.StreamResponse(
                headers={"Content-Type": "image/png", "Content-Length": str(len(body))}
            )
            await response.prepare(request)
            view = memoryview(body)
            for start in range(0, len(body), 1 << 20):
                await response.write(view[start : start + (1 << 20)])
            await response.write_eof()
            state["served"] += 1
            return response
        finally:
            state["now"] -= 1

    async def size(request: web.Request) -> web.Response:
        return web.json_response({"size": len(body)})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(state)

    app = web.Application()
    app.router.add_get("/f/{n}", file)
    app.router.add_get("/size", size)
    app.router.add_get("/stats", stats)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


async def run(users: int, files: int, megabytes: int) -> dict[str, Any]:
    import aiohttp

    from bot.app import Attachment, Core, decode_attachments
    from bot.config import Settings
    from bot.model.images import read_capped

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.downloads", "--serve", str(port), "--megabytes", str(megabytes)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):  # the server builds its PNG first
                try:
                    async with http.get(f"{base}/size") as response:
                        declared = int((await response.json())["size"])
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the file server did not start")
            with tempfile.TemporaryDirectory() as tmp:
                settings = Settings.load(
                    environ={"IMAGEBOT_DB": f"{tmp}/bench.sqlite3", "IMAGEBOT_OFFLINE": "1"}, env_file=None
                )
                core = await Core.start(settings)
                start_rss = peak_rss_mb()

                async def download(url: str, name: str) -> bytes:  # as discord/images.py's download reads
                    async with core.downloading(), http.get(url) as response:
                        response.raise_for_status()
                        return await read_capped(response.content.iter_chunked(1 << 16), name, declared)

                decoded = 0

                async def user(u: int) -> None:
                    nonlocal decoded
                    attached = [
                        Attachment(
                            f"u{u}-{i}.png",
                            declared,
                            functools.partial(download, f"{base}/f/{u}-{i}", f"u{u}-{i}.png"),
                        )
                        for i in range(files)
                    ]
                    core.check_attachments("fuse these", attached)
                    references, _ = await decode_attachments(attached, slot=core.downloading)
                    decoded += len(references)
                    del references  # the request would hold them from here: measured elsewhere

                try:
                    wall = time.perf_counter()
                    await asyncio.gather(*(user(u) for u in range(users)))
                    wall = time.perf_counter() - wall
                finally:
                    await core.close()
            async with http.get(f"{base}/stats") as response:
                stats = await response.json()
    finally:
        server.terminate()
        server.wait(10)
    in_flight = settings.max_downloads
    return {
        "users": users,
        "files_each": files,
        "file_mb": round(declared / MB, 1),
        "decoded": decoded,
        "max_downloads": in_flight,
        "downloads_at_once_peak": stats["peak"],
        "wall_s": round(wall, 2),
        "rss_before_mb": round(start_rss, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_budget_mb": in_flight * 2 * 50 + 200,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=40)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.megabytes)
        return
    result = asyncio.run(run(args.users, args.files, args.megabytes))
    result["ok"] = (
        result["peak_rss_mb"] <= result["rss_budget_mb"]
        and result["downloads_at_once_peak"] <= result["max_downloads"]
        and result["decoded"] == args.users * args.files
    )
    print(
        f"peak_rss_mb={result['peak_rss_mb']} rss_budget_mb={result['rss_budget_mb']} "
        f"downloads at once: {result['downloads_at_once_peak']} (max {result['max_downloads']})",
        file=sys.stderr,
    )
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
