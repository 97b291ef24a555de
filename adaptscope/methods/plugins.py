"""Methods from outside the package: a researcher's own module, named in the experiment.

A plugin is an importable module name (`mylab.methods`) or a path to a `.py` file; importing it
runs its `@register_method` decorators. Plugins are part of a RunSpec, so a spawned worker or a
`--resume` imports them again before looking its method up. A plugin is code that runs, so
each one imported is named on stderr, and whatever it raises (`sys.exit` included) is one error
naming it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

from adaptscope.errors import PluginError

__all__ = ["PluginError", "import_plugins", "resolve_plugin"]


def _is_file_reference(ref: str) -> bool:
    return ref.endswith(".py") or "/" in ref or "\\" in ref


def resolve_plugin(ref: str) -> str:
    """The reference as it is stored in a RunSpec: files become absolute paths."""
    if not _is_file_reference(ref):
        return ref
    path = Path(ref).expanduser().resolve()
    if not path.is_file():
        raise PluginError(f"plugin {ref}: no such file ({path}); give a .py file that registers "
                          "methods with @register_method, or an importable module name")
    return str(path)


def _import_file(path: Path, announce: bool) -> None:
    # One module name per file path, so importing the same file twice is a no-op.
    name = "adaptscope_plugin_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    if name in sys.modules:
        return
    if announce:
        print(f"loading plugin {path}", file=sys.stderr, flush=True)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin {path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def import_plugins(refs: list[str], announce: bool = True) -> None:
    """Import every plugin so that the methods it registers can be looked up by name, naming
    each on stderr as it is first imported unless `announce` is false."""
    for ref in refs:
        try:
            if _is_file_reference(ref):
                _import_file(Path(resolve_plugin(ref)), announce)
            else:
                if announce and ref not in sys.modules:
                    print(f"loading plugin {ref}", file=sys.stderr, flush=True)
                importlib.import_module(ref)
        except (PluginError, KeyboardInterrupt):
            raise
        except ModuleNotFoundError as exc:
            raise PluginError(f"plugin {ref!r}: module not found ({exc}); install it, or give "
                              "the path of its .py file") from exc
        except SystemExit as exc:  # would end adaptscope with the plugin's code and no word
            raise PluginError(f"plugin {_named(ref)} called sys.exit({exc.code!r}) while being "
                              "imported; a plugin should only define and register methods"
                              ) from exc
        except BaseException as exc:
            raise PluginError(f"plugin {_named(ref)} failed while being imported: "
                              f"{type(exc).__name__}: {exc}") from exc


def _named(ref: str) -> str:
    """A plugin as errors name it: its file's full path, or the module name."""
    return str(Path(ref).expanduser().resolve()) if _is_file_reference(ref) else repr(ref)
