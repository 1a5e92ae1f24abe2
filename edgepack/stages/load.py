"""Load a model source: an ONNX file, a torch factory `file.py:factory`, or a `.pt2` file.

Only this module, `compress` and `export` import torch, and only when a torch source is
actually used.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import USER_CODE_ERRORS, ModelError, one_line, what_raised


@dataclass
class LoadedModel:
    """A model in its source framework: `kind` is "onnx" or "torch"."""

    kind: str
    source: str
    onnx_path: Path | None = None
    module: Any = None  # torch.nn.Module for torch sources


def load_model(model_section) -> LoadedModel:
    if model_section.onnx is not None:
        path = Path(model_section.onnx)
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        return LoadedModel("onnx", str(path), onnx_path=path)
    if model_section.input_shape is None and not model_section.inputs:
        raise ModelError("torch models need a static input shape: set [model] input_shape or --input-shape")
    if model_section.torch is not None:
        return LoadedModel("torch", model_section.torch, module=_load_factory(model_section.torch))
    return LoadedModel("torch", str(model_section.pt2),
                       module=_load_pt2(Path(model_section.pt2), trusted=getattr(model_section, "trust_source", False)))


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ModelError("this model is a PyTorch source; install the torch extra: "
                         "pip install 'edgepack[torch]'") from None
    return torch


def _load_factory(spec: str):
    torch = _import_torch()
    file_part, _, func = spec.rpartition(":")
    path = Path(file_part)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    name = f"_edgepack_model_{path.stem}"
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        mod_spec.loader.exec_module(module)
    except USER_CODE_ERRORS as exc:  # sys.exit() or Ctrl-C raised by user code is reported, not obeyed
        raise ModelError(f"{path}: importing it failed ({what_raised(exc)})") from None
    factory = getattr(module, func, None)
    if not callable(factory):
        raise ModelError(f"{path}: no callable named '{func}' (expected a factory returning an nn.Module)")
    try:
        model = factory()
    except USER_CODE_ERRORS as exc:
        raise ModelError(f"{spec}: the factory raised {what_raised(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{spec}: the factory returned {type(model).__name__}; expected a torch.nn.Module")
    return model.eval()


def _load_pt2(path: Path, trusted: bool = False):
    """A torch.export program. Untrusted (the default), the archive is loaded only when every
    member is plain data (see `_check_pt2`), from the bytes that were checked; trusted, by
    torch.export.load, which unpickles what the archive asks it to."""
    torch = _import_torch()
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    with _quiet_torch_logs():
        if not trusted:
            _check_pt2(path, data, torch)
        try:
            if trusted:
                program = torch.export.load(io.BytesIO(data))
            else:
                # not torch.export.load: when this fails it retries the file as the older format,
                # which is a pickle
                from torch.export.pt2_archive._package import load_pt2

                program = load_pt2(io.BytesIO(data)).exported_programs["model"]
        except USER_CODE_ERRORS as exc:  # torch raises many kinds; a trusted file's pickles may sys.exit()
            raise ModelError(f"{path}: not a readable torch.export .pt2 file ({type(exc).__name__}: "
                             f"{one_line(exc, 200)})") from None
    return program


@contextmanager
def _quiet_torch_logs():
    """torch.export logs a multi-line traceback (WARNING) before raising on a bad archive;
    the one-line error says it."""
    loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export", "torch.export.pt2_archive")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# ---------------------------------------------------------------------------------------
# .pt2 archives: data unless the user trusts them
#
# torch.export.load (torch 2.13) has no weights_only switch. It unpickles weights and
# constants the archive flags as pickled (torch.load(weights_only=False)), custom and opaque
# objects (pickle.loads), the sample inputs when weights_only refuses them (it then retries
# with weights_only=False), and a file of the older format; its graph JSON names operators
# by a dotted path walked from `torch` (any callable it reaches becomes a node) and symbolic
# shapes as sympy expressions (parsed with eval). An untrusted archive is therefore read
# member by member first, with torch's own archive reader, and loaded only when every
# member is plain data: raw tensor bytes, JSON configs, sample inputs that load with
# weights_only=True, operators under torch.ops (and the symbolic-int ops), and shape
# expressions made of sympy constructors, numbers and symbol names.

_PT2_PLAIN = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
# the symbolic-int operations torch.export serialises outside torch.ops (its `_SYM_OPS`)
_SYM_TARGETS = frozenset({*(f"_operator.{n}" for n in (
    "add", "and_", "eq", "floordiv", "ge", "gt", "le", "lshift", "lt", "mod", "mul", "ne", "neg", "or_", "pos", "pow",
    "rshift", "sub", "truediv")), "math.trunc", "torch._sym_sqrt", "torch.sym_float", "torch.sym_int", "torch.sym_ite",
    "torch.sym_max", "torch.sym_min", "torch.sym_not"})
_OP_TARGET = re.compile(r"^torch\.ops\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+){1,2}$")
_EXPR_TOKEN = re.compile(r"\s+|(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<kw>\s*=(?!=))?|'[A-Za-z0-9_]*'"
                         r"|\d+(\.\d+)?([eE][+-]?\d+)?|==|!=|<=|>=|\*\*|[-+*/%<>(),]")


class Untrusted(ModelError):
    """A model file edgepack will not load without --trust-source."""


def _untrusted(path: Path, member: str, why: str) -> Untrusted:
    return Untrusted(f"{path}: refusing to load it: archive member {member} {why}; loading it could run code. "
                     "If you trust this file, pass --trust-source (or set [model] trust_source = true)")


def _sympy_name_ok(name: str) -> bool:
    import sympy
    import torch.utils._sympy.functions as fns

    if name in ("True", "False", "None") or re.fullmatch(r"[a-z]{1,3}\d+", name):
        return True  # a literal, or a shape symbol such as s77 / u0
    obj = getattr(fns, name, None) if name[:1].isupper() else None
    obj = obj if obj is not None else getattr(sympy, name, None)
    # classes of sympy expressions (Symbol, Add, Integer, FloorDiv, ...) and constants (oo):
    # never sympify, lambdify, preview or another function that reads strings or files
    return (isinstance(obj, type) and issubclass(obj, sympy.Basic)) or isinstance(obj, sympy.Basic)


def _expr_problem(expr: str) -> str | None:
    pos = 0
    while pos < len(expr):
        m = _EXPR_TOKEN.match(expr, pos)
        if m is None:
            return f"has a shape expression with {expr[pos:pos + 20]!r}"
        if m.group("name") and not m.group("kw") and not _sympy_name_ok(m.group("name")):
            return f"has a shape expression naming {m.group('name')!r}, not a sympy expression class"
        pos = m.end()
    return None


def _graph_problem(doc) -> str | None:
    """Why an exported program's JSON is not plain data (see above), or None."""
    stack = [doc]
    while stack:
        obj = stack.pop()
        if isinstance(obj, dict):
            target = obj.get("target")
            if isinstance(target, str) and "inputs" in obj and "outputs" in obj:
                if not (_OP_TARGET.match(target) or target in _SYM_TARGETS) or "__" in target:
                    return f"calls {target!r}, which is not a torch operator"
            expr = obj.get("expr_str")
            if isinstance(expr, str) and (why := _expr_problem(expr)):
                return why
            stack.extend(obj.values())
        elif isinstance(obj, list):
            stack.extend(obj)
    if isinstance(doc, dict):
        if doc.get("guards_code"):
            return "carries guard code (Python source)"
        if any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in doc.get("range_constraints") or {}):
            return "has a range constraint that is not a symbol name"
    return None


def _check_pt2(path: Path, data: bytes, torch) -> None:
    """Raise Untrusted unless every member of the archive is plain data."""
    import json

    try:
        from torch.export.pt2_archive import constants as k
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        names = list(reader.get_all_records())
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError and others for a bad zip
        raise ModelError(f"{path}: not a readable torch.export .pt2 file ({type(exc).__name__}: "
                         f"{one_line(exc, 160)})") from None
    if len(set(names)) != len(names):
        raise _untrusted(path, next(n for n in names if names.count(n) > 1), "appears twice")
    if k.ARCHIVE_FORMAT_PATH not in names or k.ARCHIVE_VERSION_PATH not in names:
        raise _untrusted(path, "archive_version", "is missing: this is not a current torch.export archive (older "
                                                  "ones are pickles)")

    def read(name: str) -> bytes:
        return reader.get_record(name)

    plain = set(_PT2_PLAIN)
    models = [n for n in names if n.startswith(k.MODELS_DIR) and n.endswith(".json")]
    for member in models:
        model = member[len(k.MODELS_DIR):-len(".json")]
        plain.add(member)
        try:
            doc = json.loads(read(member))
        except ValueError:
            raise _untrusted(path, member, "is not JSON") from None
        why = _graph_problem(doc)
        if why:
            raise _untrusted(path, member, why)
        for cfg_fmt, folder, kind in ((k.WEIGHTS_CONFIG_FILENAME_FORMAT, k.WEIGHTS_DIR, "weight"),
                                      (k.CONSTANTS_CONFIG_FILENAME_FORMAT, k.CONSTANTS_DIR, "constant")):
            cfg_name = cfg_fmt.format(model)
            if cfg_name not in names:
                continue  # torch names what is missing
            plain.add(cfg_name)
            try:
                entries = json.loads(read(cfg_name)).get("config") or {}
            except (ValueError, AttributeError):
                raise _untrusted(path, cfg_name, "is not a JSON payload config") from None
            for fqn, meta in entries.items():
                file = folder + str((meta or {}).get("path_name"))
                if (meta or {}).get("use_pickle") or not (meta or {}).get("tensor_meta"):
                    raise _untrusted(path, file, f"is pickled (the {kind} {fqn!r})")
                if kind == "constant" and not str(meta.get("path_name")).startswith(k.TENSOR_CONSTANT_FILENAME_PREFIX):
                    raise _untrusted(path, file, f"is a pickled object (the constant {fqn!r})")
                plain.add(file)
        sample = k.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
        if sample in names:
            # torch reads it with weights_only=True and, when that refuses, unpickles it fully
            try:
                torch.load(io.BytesIO(read(sample)), weights_only=True)
            except Exception:  # noqa: BLE001 - whatever the safe unpickler refuses
                raise _untrusted(path, sample, "is pickled with objects other than tensors") from None
            plain.add(sample)
    for member in names:
        if member in plain or (member.startswith(k.EXTRA_DIR) and "/" not in member[len(k.EXTRA_DIR):]):
            continue
        pickled = member.endswith((".pt", ".pkl", ".pickle")) or read(member)[:1] == b"\x80"
        raise _untrusted(path, member, "is pickled" if pickled else "is not a part edgepack can check "
                                                                    "(not plain tensor data or JSON)")
