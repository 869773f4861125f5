"""A module imported on first use: `openai` costs about 0.7 s of CPU to import (its types package alone is most
of it), and only a render or a relax batch needs it, so `imagebot --help`, `report`, `quota` and the other
one-shot commands start without it. Importers write

    if TYPE_CHECKING:
        import openai
    else:
        openai = lazy.module("openai")

so that mypy checks every use against the real module, and the first attribute read imports it."""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import ModuleType


def module(name: str) -> ModuleType:
    """`name`, imported now if it already was, else when an attribute of it is first read (the standard library's
    LazyLoader recipe). A missing module fails here, at import time, as a plain import would."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    lazy = importlib.util.module_from_spec(spec)
    sys.modules[name] = lazy
    loader.exec_module(lazy)
    return lazy


_loading = threading.Lock()  # a lazy module run from two threads at once would be seen half made by one


def load(name: str) -> None:
    """Finish importing `name` now (its first attribute read runs the import). Called in a thread by whoever is
    about to need it (`await asyncio.to_thread(lazy.load, "openai")`), so the event loop keeps answering
    meanwhile, as for any other CPU work."""
    with _loading:
        target = sys.modules.get(name) or module(name)
        loaded = target.__name__  # reading any attribute of a lazy module runs its import
    if loaded != name:
        raise ModuleNotFoundError(f"{name!r} loaded as {loaded!r}", name=name)
