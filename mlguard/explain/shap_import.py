"""Import shap without its plotting half, which a serving process never uses; plots come back on first use.

Why: ``import shap`` imports matplotlib and pyplot whenever matplotlib is installed (mlguard installs it for the
fairness HTML report), and with them Pillow and fontTools. In the guarded credit example that was 0.8 s of the
worker's start-up and 18 MB of its resident memory (14 MB of it the process's own), for plotting functions
nothing on the request path calls.

How: while shap's package body runs, ``sys.modules["matplotlib"]`` is None, so its ``import matplotlib`` fails
and shap installs placeholders (``shap.unsupported`` and ``shap.UnsupportedModule``) instead of its plot
functions. Each placeholder is then replaced by a trampoline that, on first use, runs shap's package body again
(``importlib.reload``; submodules stay imported, so only the plotting half is new), which now finds matplotlib
and binds the real functions, and forwards the call. So ``shap.plots.bar(...)`` or ``shap.summary_plot(...)``
in user code in the same process still works, paying the import when it first plots.

Nothing is hidden when shap or matplotlib is already imported (the user's code loaded them: there is nothing
to save), or when this shap has no such placeholders (another shap version: it is imported as it is).
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType
from typing import Any

_lock = threading.Lock()


def import_shap() -> ModuleType:
    """shap, imported without matplotlib when that is possible; ImportError when shap is not installed."""
    loaded = sys.modules.get("shap")
    if loaded is not None:
        return loaded
    with _lock:
        loaded = sys.modules.get("shap")
        if loaded is not None:
            return loaded
        if "matplotlib" in sys.modules:
            import shap

            return sys.modules["shap"]
        sys.modules["matplotlib"] = None  # type: ignore[assignment]  # `import matplotlib` raises ImportError
        try:
            import shap  # noqa: F401
        finally:
            if sys.modules.get("matplotlib", 0) is None:
                del sys.modules["matplotlib"]
        module = sys.modules["shap"]
        _defer_plots(module)
        return module


def _defer_plots(shap: ModuleType) -> None:
    """Replace shap's "matplotlib is not installed" placeholders by trampolines that load the plots."""
    unsupported = getattr(shap, "unsupported", None)
    placeholder = getattr(shap, "UnsupportedModule", None)
    if unsupported is None or not isinstance(placeholder, type):
        return
    for name, value in list(vars(shap).items()):
        if value is unsupported and name != "unsupported":
            setattr(shap, name, _function(shap, name))
        elif isinstance(value, placeholder):
            setattr(shap, name, _Module(shap, name))


def _load_plots(shap: ModuleType) -> None:
    with _lock:
        if not getattr(shap, "have_matplotlib", True):
            importlib.reload(shap)


def _function(shap: ModuleType, name: str) -> Any:
    def plot(*args: Any, **kwargs: Any) -> Any:
        _load_plots(shap)
        return getattr(shap, name)(*args, **kwargs)

    plot.__name__ = plot.__qualname__ = name
    plot.__doc__ = f"shap.{name}; shap's plotting is loaded on first use (mlguard.explain.shap_import)."
    return plot


class _Module:
    """Stands for ``shap.plots`` until first used."""

    def __init__(self, shap: ModuleType, name: str) -> None:
        self._shap = shap
        self._name = name

    def __getattr__(self, item: str) -> Any:
        _load_plots(self._shap)
        return getattr(getattr(self._shap, self._name), item)

    def __repr__(self) -> str:
        return f"<shap.{self._name}, loaded on first use>"
