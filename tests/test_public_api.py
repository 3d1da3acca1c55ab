"""Every public class and function documents itself the way mkdocstrings renders it (Google style).

Public means: a class or function named in the `__all__` of a module under `transformers_v2l`, and the
public methods (names not starting with `_`) of those classes. Each needs a docstring with

* `Args:` when it takes parameters other than `self`/`cls` (a class documents its constructor's);
* `Returns:` (or `Yields:`) when it returns something other than `None`, judged by its return
  annotation, or, without one, by whether its body returns a value;
* `Example:`.

Properties need a one-line docstring. Dataclass fields need one line each: an `Args:`/`Attributes:`
entry in the class docstring or a docstring under the field. Modules whose optional dependency is not
installed are skipped, like `pytest.importorskip`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import itertools
import pkgutil
import textwrap
import types
from typing import Any

import pytest

import transformers_v2l

SELF_PARAMETERS = {"self", "cls"}
NO_VALUE_ANNOTATIONS = {"None", "NoReturn", "Never", "typing.NoReturn", "typing.Never"}


def _import(name: str) -> tuple[types.ModuleType | None, str | None]:
    try:
        return importlib.import_module(name), None
    except ImportError as error:  # an optional extra (or a metric script's `evaluate`) is missing
        return None, f"{name}: {error}"


def _walk_modules() -> tuple[list[types.ModuleType], list[str]]:
    modules, skipped = [transformers_v2l], []
    for info in pkgutil.walk_packages(
        transformers_v2l.__path__, prefix="transformers_v2l.", onerror=skipped.append
    ):
        module, reason = _import(info.name)
        if module is None:
            skipped.append(reason)
        else:
            modules.append(module)
    return modules, skipped


def _own_object(obj: Any) -> bool:
    return (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(obj, "__module__", "").startswith(
        "transformers_v2l"
    )


def _public_objects() -> dict[str, Any]:
    """`{qualified name: object}` of every public class, function, method and property (deduplicated)."""
    modules, _ = _walk_modules()
    found: dict[str, Any] = {}
    seen: set[int] = set()

    def add(name: str, obj: Any) -> None:
        if id(obj) not in seen:
            seen.add(id(obj))
            found[name] = obj

    for module in modules:
        for name in getattr(module, "__all__", ()):
            try:
                obj = getattr(module, name)
            except ImportError:  # a lazily imported name whose extra is missing
                continue
            if not _own_object(obj):
                continue  # constants and re-exported third-party objects
            qualified = f"{obj.__module__}.{obj.__qualname__}"
            add(qualified, obj)
            if inspect.isclass(obj):
                for member_name, member in _public_members(obj):
                    add(f"{qualified}.{member_name}", member)
    return dict(sorted(found.items()))


def _public_members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties defined by `cls` or by its bases from this package."""
    members = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("transformers_v2l"):
            continue
        for name, member in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if inspect.isfunction(member) or isinstance(member, (property, functools.cached_property)):
                members[name] = member
    return sorted(members.items())


def _docstring(obj: Any) -> str:
    """The object's own docstring: mkdocstrings does not render a docstring inherited from a base class."""
    if isinstance(obj, property):
        obj = obj.fget
    elif isinstance(obj, functools.cached_property):
        obj = obj.func
    return inspect.cleandoc(obj.__doc__ or "")


def _parameters(function: Any) -> list[str]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return []
    return [p for p in signature.parameters if p not in SELF_PARAMETERS]


def _function_ast(function: Any) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return None
    node = ast.parse(source).body[0]
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _returns_a_value(function: Any) -> bool:
    annotation = inspect.signature(function).return_annotation
    if annotation is not inspect.Signature.empty:
        if annotation is None or annotation is type(None):
            return False
        return str(getattr(annotation, "__name__", annotation)) not in NO_VALUE_ANNOTATIONS
    node = _function_ast(function)
    if node is None:
        return False
    stack = list(node.body)
    while stack:  # return statements of this function, not of nested functions or classes
        child = stack.pop()
        if isinstance(child, ast.Return) and child.value is not None:
            return True
        if isinstance(child, (ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(child))
    return False


def _constructor(cls: type) -> Any | None:
    """The `__init__` a user calls, when this package (or a dataclass) defines it."""
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            init = vars(klass)["__init__"]
            own = getattr(init, "__module__", None) or ""  # a Protocol's __init__ comes from typing
            return init if own.startswith("transformers_v2l") or dataclasses.is_dataclass(cls) else None
    return None


def _documented_fields(cls: type) -> set[str]:
    """Field names documented in the class docstring's `Args:`/`Attributes:` or by a docstring below them."""
    names = set()
    doc = _docstring(cls)
    in_section = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Attributes:", "Parameters:"):
            in_section = True
            continue
        if in_section and stripped and not line.startswith(" "):
            in_section = stripped.endswith(":") and stripped in ("Args:", "Attributes:")
        if in_section and line.startswith("    ") and not line.startswith("        "):
            names.add(stripped.split(":")[0].split(" ")[0].strip("`*"))
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return names
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for statement, following in itertools.pairwise(body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            names.add(statement.target.id)
    return names


def _problems(obj: Any) -> list[str]:
    doc = _docstring(obj)
    if not doc.strip():
        return ["no docstring"]
    if isinstance(obj, (property, functools.cached_property)):
        return []
    problems = []
    if inspect.isclass(obj):
        if dataclasses.is_dataclass(obj):
            own = [name for name in vars(obj).get("__annotations__", {}) if not name.startswith("_")]
            fields = {f.name for f in dataclasses.fields(obj)}
            missing = sorted(set(own) & fields - _documented_fields(obj))
            if missing:
                problems.append(f"undocumented dataclass fields {missing}")
        else:
            init = _constructor(obj)
            if init is not None and _parameters(init) and "Args:" not in doc:
                problems.append("no `Args:` for the constructor")
    else:
        if _parameters(obj) and "Args:" not in doc:
            problems.append("no `Args:`")
        if _returns_a_value(obj) and "Returns:" not in doc and "Yields:" not in doc:
            problems.append("no `Returns:`")
    if "Example:" not in doc:
        problems.append("no `Example:`")
    return problems


PUBLIC = _public_objects()


def test_the_walk_finds_the_public_api():
    names = set(PUBLIC)
    for expected in (
        "transformers_v2l.modeling_video2lora.Video2LoraHypernetwork",
        "transformers_v2l.modeling_video2lora.Video2LoraHypernetwork.internalize",
        "transformers_v2l.lora.GeneratedLora.from_pretrained",
        "transformers_v2l.lora.GeneratedLora.rank",
        "transformers_v2l.cli.main",
        "transformers_v2l.toy_world.render.make_clip",
    ):
        assert expected in names
    assert len(PUBLIC) > 100


@pytest.mark.parametrize("name", list(PUBLIC))
def test_public_object_is_documented(name):
    problems = _problems(PUBLIC[name])
    assert not problems, f"{name}: {', '.join(problems)}"


def test_optional_modules_skip_cleanly():
    """Modules that cannot be imported are skipped only for a missing optional dependency."""
    _, skipped = _walk_modules()
    for reason in skipped:
        assert isinstance(reason, str), f"walk_packages could not import {reason}"
        assert any(
            extra in reason
            for extra in (
                "accelerate",
                "datasets",
                "evaluate",
                "matplotlib",
                "psutil",
                "yaml",
                "requests",
                "transformers-v2l[",
            )
        ), reason
