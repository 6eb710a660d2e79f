"""What runs inside a submission's kernel at grading time: the tamper checks, the kit's check, one verdict.

The grader appends one cell per exercise to the submitted notebook. That cell loads this file afresh from
the read-only kit (never the copy in `sys.modules`) and calls `grade(...)`, which:
1. looks for what could make a check lie, all from code the notebook wrote (a function whose code lives
   outside the read-only kit and Python environment): a function or class of torch, PEFT, transformers, the
   standard library, IPython or ipykernel replaced; an import hook; a thread still running notebook code; a
   trace or profile function; an IPython event hook or input/AST transformer; the kernel's output streams,
   display publisher or session patched; a library module loaded from a file the notebook wrote. Any of
   these makes the exercise "not graded", naming what was found. The one writable place library code comes
   from is torch's compiler: Inductor writes the modules it generates (bitsandbytes compiles its CPU fallback
   with torch.compile) to its cache folder and loads them from there. Such a module is accepted when it is in
   the folder the grader named (the sandbox's TORCHINDUCTOR_CACHE_DIR), has the name and file torch gives it,
   and torch's code cache holds it; its code is trusted in that module only, never as a replacement elsewhere.
   Its content is not checked: a notebook can write a file there and have torch's own loader load it
   (`PyCodeCache.load_by_key_path`, or a file left where torch will write a module next). That gives it no more
   than compiling its code under a library's file name does (below);
2. drops every `lora_lab` module from `sys.modules` and imports the kit afresh from its read-only folder
   (the notebook's own folder and any path it added set aside), so a kit function or constant the notebook
   replaced in memory is back to the kit's own: the check computes its references with those. A replaced one
   is only noted;
3. calls the check on the learner's function or class with its output captured (so code in the answer
   cannot print a verdict), looks again for tampering the answer itself may have done, and shows exactly
   one verdict as a display of MIME type `MIME`, carrying the grading run's secret `nonce`.

The grader reads that display from the cell's output as its own Jupyter client received it, outside the
sandbox. What this cannot stop is written in the README: code in the same process can always defeat
checks made in that process (nbgrader and otter-grader say the same of theirs), for example by compiling
its functions under a library's file name, or by sending the kernel's messages itself.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
import time
import types

MIME = "application/vnd.lora-lab.grade+json"
# packages a check relies on (the kit's own are handled apart: a replaced kit function is undone, not fatal)
SCANNED = ("builtins", "sys", "math", "cmath", "re", "json", "html", "traceback", "warnings", "functools",
           "importlib", "inspect", "types", "io", "os", "threading", "dataclasses", "copy", "operator", "numbers",
           "contextlib", "torch", "numpy", "peft", "transformers", "bitsandbytes", "safetensors", "accelerate",
           "IPython", "ipykernel", "jupyter_client", "zmq", "comm")

# the module torch's compiler loads its generated code with: each generated module is named <this>.<key>
GENERATED_BY = "torch._inductor.runtime.compile_tasks"

_MODULE_DICT = types.ModuleType.__dict__["__dict__"]
_TYPE_DICT = type.__dict__["__dict__"]


class _Trust:
    """Where trusted code lives: files under these folders (read-only in the sandbox), and the files of exactly
    these modules. inductor: the folder where torch's compiler writes the modules it generates (see
    `generated`), or None."""

    def __init__(self, folders: list[str], inductor: str | None = None, files: frozenset = frozenset()):
        self.folders, self.files = list(folders), files
        self.prefixes = tuple(f.rstrip("/") + "/" for f in folders)
        self.inductor = os.path.abspath(inductor) + "/" if inductor else None

    def file(self, path) -> bool:
        return type(path) is str and (path.startswith(self.prefixes) or path in self.files)

    def also(self, path: str) -> _Trust:
        """This trust and the code compiled from the file path (a generated module's own functions)."""
        return _Trust(self.folders, self.inductor, self.files | {path})

    def generated(self, name: str, module, where) -> bool:
        """True for a module torch's compiler (Inductor) generated and loaded itself: its file is
        <inductor>/<key[1:3]>/<key>.py (torch._inductor.codecache.get_path), its name <GENERATED_BY>.<key>
        (compile_tasks._reload_python_module), and torch's code cache (PyCodeCache.modules) holds this very
        module object. Anything else in that folder, which the notebook can write to, is not trusted."""
        if self.inductor is None or type(where) is not str or not where.endswith(".py"):
            return False
        key = os.path.basename(where)[:-3]
        if len(key) < 3 or where != f"{self.inductor}{key[1:3]}/{key}.py" or name != f"{GENERATED_BY}.{key}":
            return False
        cache = sys.modules.get("torch._inductor.codecache")
        if type(cache) is not types.ModuleType or not self.file(_MODULE_DICT.__get__(cache).get("__file__")):
            return False
        holder = _MODULE_DICT.__get__(cache).get("PyCodeCache")
        if not issubclass(type(holder), type) or not self.cls(holder):
            return False
        loaded = _TYPE_DICT.__get__(holder).get("modules")
        return type(loaded) is list and any(m is module for m in list(loaded))

    def code(self, code) -> bool | None:
        """False for code the notebook wrote, True for the kit's or a library's, None for code without a file."""
        name = code.co_filename
        if name.startswith("<"):
            return None  # "<string>" (exec), "<frozen …>"
        return self.file(name)

    def function(self, obj) -> bool:
        """True unless obj is (or wraps) a function whose code the notebook wrote. Touches no attribute that could
        run the notebook's code: only plain functions, methods, descriptors and partials are looked into."""
        for _ in range(4):
            kind = type(obj)  # never isinstance: it would read obj.__class__, which an object may compute
            if issubclass(kind, (staticmethod, classmethod, types.MethodType)):
                obj = obj.__func__
            elif issubclass(kind, functools.partial):
                obj = obj.func
            elif issubclass(kind, property):
                return all(self.function(f) for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
            else:
                break
        if type(obj) is not types.FunctionType:
            return True
        verdict = self.code(obj.__code__)
        if verdict is None:
            return obj.__module__ != "__main__"
        return verdict

    def cls(self, kind: type) -> bool:
        """True unless the class was defined by the notebook (its module is __main__ or a method is notebook code)."""
        if kind.__module__ == "__main__":
            return False
        try:
            own = _TYPE_DICT.__get__(kind)
        except TypeError:
            return True
        return all(self.function(v) for v in list(own.values()))

    def obj(self, value) -> bool:
        """A function, class or any object: its type and, for plain objects, its own attributes."""
        if issubclass(type(value), type):
            return self.cls(value)
        if not self.function(value) or not self.cls(type(value)):
            return False
        return True


def _instance_dict(obj) -> dict:
    try:
        own = object.__getattribute__(obj, "__dict__")
    except (AttributeError, TypeError):
        return {}
    return own if type(own) is dict else {}


def _modules(prefixes: tuple[str, ...]):
    for name, module in list(sys.modules.items()):
        if issubclass(type(module), types.ModuleType) and name.split(".")[0] in prefixes:
            yield name, module


def tampering(trust: _Trust, shell=None) -> list[str]:
    """What the notebook's code changed that could make a check lie; [] when nothing was found."""
    found, seen_types = [], {}
    for name, module in _modules(SCANNED):
        if type(module) is not types.ModuleType and not trust.cls(type(module)):
            found.append(f"module {name} replaced by the notebook's own")
            continue
        own = _MODULE_DICT.__get__(module)
        where, here = own.get("__file__"), trust
        if where is not None and not trust.file(where):
            if not trust.generated(name, module, where):
                found.append(f"{name} loaded from {where}")
                continue
            here = trust.also(where)  # torch generated it: its own functions are compiled from its file
        for attr, value in list(own.items()):
            if issubclass(type(value), type):
                if value.__module__ == name:
                    for k, v in list(_TYPE_DICT.__get__(value).items()):
                        if not here.function(v):
                            found.append(f"{name}.{value.__name__}.{k} replaced")
                continue
            if not here.function(value):
                found.append(f"{name}.{attr} replaced")
            elif not issubclass(type(value), (types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
                kind = type(value)
                if here is not trust:
                    seen = here.cls(kind)
                elif kind not in seen_types:
                    seen = seen_types[kind] = trust.cls(kind)
                else:
                    seen = seen_types[kind]
                if not seen:
                    found.append(f"{name}.{attr} replaced by an object of the notebook's class {kind.__name__}")
    for what, hooks in (("sys.meta_path", sys.meta_path), ("sys.path_hooks", sys.path_hooks),
                        ("sys.path_importer_cache", [v for v in sys.path_importer_cache.values() if v is not None])):
        found += [f"an import hook in {what} ({type(h).__name__})" for h in list(hooks) if not trust.obj(h)]
    for what, hook in (("sys.settrace", sys.gettrace()), ("sys.setprofile", sys.getprofile()),
                       ("threading.settrace", getattr(threading, "_trace_hook", None)),
                       ("threading.setprofile", getattr(threading, "_profile_hook", None))):
        if hook is not None and not trust.obj(hook):
            found.append(f"a function set with {what}")
    me = threading.get_ident()
    for ident, frame in list(sys._current_frames().items()):
        while ident != me and frame is not None:
            if trust.code(frame.f_code) is False:
                found.append(f"a thread still running the notebook's {frame.f_code.co_name}()")
                break
            frame = frame.f_back
    objects = {"sys.stdout": sys.stdout, "sys.stderr": sys.stderr, "sys.displayhook": sys.displayhook,
               "sys.excepthook": sys.excepthook}
    if shell is not None:
        objects |= {"the display publisher": getattr(shell, "display_pub", None),
                    "the display hook": getattr(shell, "displayhook", None),
                    "the display formatter": getattr(shell, "display_formatter", None),
                    "the kernel session": getattr(getattr(shell, "kernel", None), "session", None),
                    "the kernel's output socket": getattr(getattr(shell, "kernel", None), "iopub_socket", None)}
        for event, callbacks in list(getattr(getattr(shell, "events", None), "callbacks", {}).items()):
            found += [f"an IPython event hook on {event}" for c in list(callbacks) if not trust.obj(c)]
        for what in ("ast_transformers", "input_transformers_cleanup", "input_transformers_post"):
            found += [f"an IPython {what[:-1].replace('_', ' ')}" for t in list(getattr(shell, what, []))
                      if not trust.obj(t)]
    for what, value in objects.items():
        if value is None:
            continue
        if not trust.obj(value):
            found.append(f"{what} replaced by the notebook's own")
        found += [f"{what}.{k} replaced" for k, v in list(_instance_dict(value).items()) if not trust.function(v)]
    return list(dict.fromkeys(found))


def kit_replaced(trust: _Trust) -> list[str]:
    """The kit's functions and classes the notebook replaced in memory ("lora_lab.tasks.format_llama2")."""
    found = []
    for name, module in _modules(("lora_lab",)):
        for attr, value in list(_MODULE_DICT.__get__(module).items()):
            values = [(attr, value)]
            if issubclass(type(value), type) and value.__module__ == name:
                values += [(f"{attr}.{k}", v) for k, v in list(_TYPE_DICT.__get__(value).items())]
            found += [f"{name}.{where}" for where, v in values if not trust.function(v)
                      or (issubclass(type(v), type) and v.__module__ == "__main__")]
    return found


def fresh_checks(trust: _Trust, language: str):
    """The kit's exercise checks imported afresh from the read-only kit: (the exercises module, problems)."""
    for name in [m for m in sys.modules if m == "lora_lab" or m.startswith("lora_lab.")]:
        del sys.modules[name]
    saved = sys.path[:]
    sys.path[:] = [p for p in saved if trust.file(p.rstrip("/") + "/")]  # the notebook's folder ('') set aside
    importlib.invalidate_caches()
    try:
        exercises = importlib.import_module("lora_lab.exercises")
    finally:
        sys.path[:] = saved
    outside = [f"{n} imported from {getattr(m, '__file__', '?')}" for n, m in _modules(("lora_lab",))
               if not trust.file(getattr(m, "__file__", None))]
    exercises.set_language(language)
    return exercises, outside


def grade(exercise_id: str, answer_name: str, namespace: dict, *, trusted: list[str], language: str,
          nonce: str, inductor: str | None = None) -> dict:
    """Grade one exercise in this kernel and show the verdict once (see the module's docstring). Returns the row:
    {"exercise", "nonce", "status" (correct, wrong, not done, missing, not graded), "message", "seconds",
    "replaced": the kit's names the notebook replaced in memory (found by the first grading cell only: it
    imports the kit afresh)}. inductor: the sandbox's TORCHINDUCTOR_CACHE_DIR (see `_Trust.generated`)."""
    from IPython.core.getipython import get_ipython
    from IPython.display import publish_display_data
    from IPython.utils.capture import capture_output

    trust, shell = _Trust(trusted, inductor), get_ipython()
    problems = tampering(trust, shell)
    row = {"exercise": exercise_id, "nonce": nonce, "status": "not graded", "message": "", "seconds": 0.0,
           "replaced": sorted(set(kit_replaced(trust)))}
    exercises, outside = fresh_checks(trust, language)
    problems += outside
    if not problems:
        check = next(c for c in exercises.EXERCISES if c.exercise_id == exercise_id)
        answer = namespace.get(answer_name)
        start = time.perf_counter()
        if answer is None:
            row.update(status="missing", message=f"{answer_name} is not defined in the notebook")
        else:
            with capture_output(display=True):  # whatever the answer prints or displays stays here
                verdict = check(answer)
            row.update(status=str(verdict.status), message=str(verdict.message)[:2000])
        row["seconds"] = round(time.perf_counter() - start, 3)
        problems = tampering(trust, shell)  # what the answer itself may have done while it was checked
        if problems:
            row.update(status="not graded", message="")
    if problems:
        row["message"] = ("the notebook changed what the check relies on: "
                          + "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else ""))
    publish_display_data({MIME: row, "text/plain": f"lora-lab grader: exercise {exercise_id}: {row['status']}"})
    return row
