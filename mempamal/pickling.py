"""The workdir's pickles: what is stored by value, and one trust rule for loading.

Tasks run in other processes, often on other machines, started in the
workdir with another ``sys.path``. Whatever a task unpickles must therefore
not refer to code only the submitting process can import:

- objects defined in the user's script (``__main__``) or in an experiment
  file, and
- objects from the user's own modules next to that script
  (``from mymetrics import cost``), which no installed package provides,

are stored *by value* (cloudpickle): their code travels in the pickle.
Everything else (scikit-learn, numpy, installed packages) is stored by
reference, as plain pickle does.

Trust: a pickle runs code when loaded. Every pickle mempamal writes has its
sha256 recorded at the moment it is written (in ``workflow.json`` or in the
JSON output of the task that wrote it) and :func:`load_pickle` refuses to
unpickle a file whose digest differs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import sys
import types
from pathlib import Path

from .errors import ValidationError, WorkdirError

#: directories whose modules are the user's own (besides the script's own)
_EXTRA_LOCAL_ROOTS: list[str] = []


def add_local_root(directory) -> None:
    """Treat modules found directly in ``directory`` as the user's own.

    The CLI calls it with an experiment file's folder, which it also puts on
    ``sys.path`` (as ``python file.py`` does), so that ``from mymodule
    import ...`` works in that file and reaches the tasks by value.
    """
    d = os.path.abspath(directory)
    if d not in _EXTRA_LOCAL_ROOTS:
        _EXTRA_LOCAL_ROOTS.append(d)


def _local_roots() -> set[str]:
    roots = set(_EXTRA_LOCAL_ROOTS)
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file:
        roots.add(os.path.dirname(os.path.abspath(main_file)))
    cwd = os.getcwd()
    # `python -c`, `python -m`, the REPL and notebooks import from the
    # current directory ('' or its path first on sys.path)
    if sys.path and sys.path[0] in ("", cwd):
        roots.add(cwd)
    return roots


def _installed_top_levels() -> frozenset[str]:
    return _top_levels_on(tuple(sys.path))


@functools.lru_cache(maxsize=4)
def _top_levels_on(path: tuple) -> frozenset[str]:
    # reading every distribution's RECORD costs ~0.3 s and a compile asks a
    # few times: remembered per sys.path, which is where they are looked up
    from importlib.metadata import packages_distributions

    try:
        return frozenset(packages_distributions())
    except Exception:  # noqa: BLE001 - a broken dist must not stop a compile
        return frozenset()


def local_modules() -> list[types.ModuleType]:
    """The imported modules that live in one of the user's own folders.

    A module counts when its top-level package sits directly in the script's
    folder (or the current folder for ``python -c`` and notebooks, or an
    experiment file's folder) and no installed distribution provides it.
    """
    roots = _local_roots()
    if not roots:
        return []
    installed = _installed_top_levels() | {"mempamal"} | set(sys.stdlib_module_names)
    found = []
    for name, mod in list(sys.modules.items()):
        top = name.partition(".")[0]
        if name != top or top in installed or name == "__main__":
            continue
        path = getattr(mod, "__file__", None)
        if not path:
            continue
        path = os.path.abspath(path)
        is_pkg = os.path.basename(path) == "__init__.py"
        parent = os.path.dirname(os.path.dirname(path) if is_pkg else path)
        if parent in roots:
            found.append(mod)
    return found


@contextlib.contextmanager
def _by_value(modules):
    import cloudpickle

    registered = []
    try:
        for mod in modules:
            with contextlib.suppress(ValueError):  # already registered
                cloudpickle.register_pickle_by_value(mod)
                registered.append(mod)
        yield cloudpickle
    finally:
        for mod in registered:
            with contextlib.suppress(ValueError):
                cloudpickle.unregister_pickle_by_value(mod)


def dumps(obj) -> bytes:
    """Pickle ``obj`` so that any task process can load it (see module doc)."""
    with _by_value(local_modules()) as cloudpickle:
        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def check_storable(named: dict) -> None:
    """Refuse, naming it, an object that cannot be stored for the tasks.

    Parameters
    ----------
    named : dict
        ``{description: object}``, e.g. ``{"scoring": scorer}``.
    """
    with _by_value(local_modules()) as cloudpickle:
        for what, obj in named.items():
            try:
                cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # noqa: BLE001 - any failure is the user's
                raise ValidationError(
                    f"{what}={_short_repr(obj)} cannot be stored for the tasks, which run "
                    f"in other processes: {type(exc).__name__}: {exc}"
                ) from exc


def _short_repr(obj, limit: int = 120) -> str:
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001
        text = f"<{type(obj).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dump_pickle(path, obj) -> str:
    """Write ``obj`` to ``path`` atomically (by value where needed); its sha256."""
    from .workdir import write_bytes

    data = dumps(obj)
    write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_pickle(path, expected_sha256: str | None, what: str | None = None,
                recorded_in: str = "when it was written"):
    """Unpickle ``path`` only if its sha256 is ``expected_sha256``.

    Raises
    ------
    WorkdirError
        When no digest was recorded or the file's differs: it is not the file
        mempamal wrote, and unpickling it could run anybody's code.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read()
    actual = hashlib.sha256(data).hexdigest()
    if expected_sha256 is None or actual != expected_sha256:
        expected = "none recorded" if expected_sha256 is None else f"{expected_sha256[:12]}..."
        raise WorkdirError(
            f"{what or path.name} does not match the sha256 recorded {recorded_in} "
            f"(sha256 {actual[:12]}..., expected {expected}); refusing to load it, as "
            f"unpickling runs code: {str(path)!r}"
        )
    return pickle.loads(data)


# -- fingerprints -------------------------------------------------------------
def fingerprint(obj) -> str:
    """A stable hash of ``obj``, including the code of by-value functions/classes.

    joblib's hash names a function by module and name only, so editing a
    scorer in the script would resume with stale results; cloudpickle's bytes
    are not stable across processes (set order, class tracker ids). Here a
    function or class stored by value is hashed by its code, defaults,
    closure and the globals it uses.
    """
    hasher = _code_hasher_class()({m.__name__ for m in local_modules()})
    return hasher.hash(obj)


def _code_hasher_class():
    from joblib.hashing import NumpyHasher

    class CodeHasher(NumpyHasher):
        def __init__(self, local_names) -> None:
            # a memory-mapped array hashes as the array it holds: a workdir's
            # data compare equal to the arrays they were written from
            super().__init__(hash_name="sha256", coerce_mmap=True)
            self._local = local_names
            self._seen: set[int] = set()

        def save_global(self, obj, name=None, pack=None):
            if not self._stored_by_value(obj):
                return super().save_global(obj, name=name)
            if id(obj) in self._seen:  # recursion: the name is enough
                return self.save(("by-value", obj.__qualname__))
            self._seen.add(id(obj))
            if isinstance(obj, type):
                body = {k: v for k, v in vars(obj).items()
                        if k not in ("__dict__", "__weakref__", "__module__", "__doc__")}
                return self.save(("class", obj.__qualname__, obj.__bases__,
                                  sorted(body.items(), key=lambda kv: kv[0])))
            return self.save(("function", obj.__qualname__, *_function_state(obj)))

        def _stored_by_value(self, obj) -> bool:
            # cloudpickle's rule: by value unless importable by module + qualname
            module = getattr(obj, "__module__", None)
            if module is None or module.partition(".")[0] in self._local:
                return module is not None
            if module == "__main__" or module not in sys.modules:
                return True
            found = sys.modules[module]
            for part in getattr(obj, "__qualname__", "<locals>").split("."):
                found = getattr(found, part, None)
            return found is not obj

    # pickle's dispatch table holds the base class's functions: point the
    # types that name code at this class's save_global
    CodeHasher.dispatch = dict(NumpyHasher.dispatch)
    for kind in (types.FunctionType, type):
        CodeHasher.dispatch[kind] = CodeHasher.save_global
    return CodeHasher


def _function_state(fn) -> tuple:
    code = getattr(fn, "__code__", None)
    if code is None:
        return (repr(fn),)
    names = _code_names(code)
    g = getattr(fn, "__globals__", {})
    used = {n: g[n] for n in sorted(names) if n in g and not isinstance(g[n], types.ModuleType)}
    cells = tuple(c.cell_contents for c in (fn.__closure__ or ())
                  if _cell_has_value(c))
    return (_code_key(code), fn.__defaults__, fn.__kwdefaults__, cells, used)


def _cell_has_value(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _code_names(code) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _code_key(code) -> tuple:
    consts = tuple(_code_key(c) if isinstance(c, types.CodeType) else repr(c)
                   for c in code.co_consts)
    return (code.co_code, consts, code.co_names, code.co_varnames, code.co_argcount,
            code.co_kwonlyargcount)
