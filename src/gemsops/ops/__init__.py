"""Every op module in this package, imported so that its declarations register.

Each module's ``__all__`` names its public host functions, which become attributes of
``gemsops.ops`` (``gemsops.ops.mm(a, b)``).
"""
import importlib
import pkgutil

__all__ = []
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
