"""An API catalog: APIs described the way a model reads them, and the requests that call them.

Each `Api` is a name, a description and typed parameters: what a model is shown as a tool (its
JSON schema, `spec`) and what a retriever indexes (its documentation page, `doc`). Beside that
it carries request templates, so that a catalog also yields training and test data: a template
filled with drawn values is a user's request, and the values are the arguments of the one right
call. A parameter's values are either said as they are ("Paris", 3) or come with the words a
user says for them (("f", "in Fahrenheit")): then the request says the words and only the
documentation ("c for Celsius or f for Fahrenheit") tells the model which value they mean.

A catalog is a JSON file (`save_catalog` / `load_catalog`) holding the APIs and which of them
are held out of training; `groklm apis make` writes the built-in synthetic set to one, so the
format is there to copy for your own APIs.
"""

from __future__ import annotations

import json
import math
import random
import string
from dataclasses import dataclass
from pathlib import Path

from groklm.errors import DataError
from groklm.infer.tool_calls import NAME_RE, ToolSpec
from groklm.rundir import atomic_path

PYTHON_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}


@dataclass(frozen=True)
class Param:
    type: str  # a JSON schema type: string, integer, number or boolean
    description: str
    values: tuple  # plain values, said as str(value), or (value, spoken) pairs
    default: object = None  # None: the parameter is required

    def choices(self) -> list[tuple[object, str]]:
        """(value, what a request says for it) for every value."""
        return [tuple(v) if isinstance(v, (tuple, list)) else (v, str(v)) for v in self.values]

    @property
    def spoken(self) -> bool:
        """Whether requests say words the docs must translate (an enum, for strings)."""
        return any(isinstance(v, (tuple, list)) for v in self.values)

    def schema(self) -> dict:
        schema: dict = {"type": self.type, "description": self.description}
        if self.type == "string" and self.spoken:
            schema["enum"] = [value for value, _ in self.choices()]
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True)
class Api:
    name: str
    description: str
    parameters: dict[str, Param]
    requests: tuple[str, ...]  # str.format templates; their fields are parameter names

    @property
    def required(self) -> list[str]:
        return [name for name, p in self.parameters.items() if p.default is None]

    def schema(self) -> dict:
        return {"type": "object", "properties": {name: p.schema() for name, p in self.parameters.items()},
                "required": self.required}

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.schema())

    def tool(self) -> dict:
        """The OpenAI `tools` entry."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.schema()}}

    def doc(self) -> str:
        """The documentation page a retriever indexes: name, description, one line per argument."""
        lines = [f"# {self.name}", "", self.description, "", "Arguments:"]
        for name, p in self.parameters.items():
            kind = p.type + (" (one of " + ", ".join(json.dumps(v) for v, _ in p.choices()) + ")"
                             if p.type == "string" and p.spoken else "")
            need = "required" if p.default is None else f"optional, default {json.dumps(p.default)}"
            lines.append(f"- {name}: {kind}, {need}. {p.description}")
        return "\n".join(lines) + "\n"

    def draw(self, rng: random.Random) -> tuple[str, dict]:
        """One request and the arguments of its call: a template filled with drawn values."""
        template = rng.choice(self.requests)
        fields = set(template_fields(template))
        arguments, words = {}, {}
        for name in (name for name in self.parameters if name in fields):  # the schema's order, as a call writes them
            choices = self.parameters[name].choices()
            # Two parameters never say the same thing: "from Paris to Paris" is no request.
            taken = {(type(v), v) for v in arguments.values()}  # by type too: True == 1 in Python
            fresh = [c for c in choices if (type(c[0]), c[0]) not in taken] or choices
            arguments[name], words[name] = rng.choice(fresh)
        return template.format(**words), arguments

    def canonical(self, arguments: dict) -> dict:
        """The arguments as the API takes them: defaults filled in, numbers as numbers (3 == 3.0).
        Two calls are the same call when their canonical arguments are equal."""
        out = {name: p.default for name, p in self.parameters.items() if p.default is not None}
        out.update(arguments)
        return {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for k, v in out.items()}


def template_fields(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


@dataclass(frozen=True)
class Catalog:
    apis: tuple[Api, ...]
    held_out: frozenset[str]  # never in training data: measured to see whether the docs are read

    def __post_init__(self):
        check_catalog(self)

    def get(self, name: str) -> Api | None:
        return next((api for api in self.apis if api.name == name), None)

    @property
    def seen(self) -> list[Api]:
        return [api for api in self.apis if api.name not in self.held_out]

    @property
    def unseen(self) -> list[Api]:
        return [api for api in self.apis if api.name in self.held_out]


def check_catalog(catalog: Catalog) -> None:
    """Refuse a catalog that would make wrong data: every problem is a DataError naming the API."""
    names = [api.name for api in catalog.apis]
    if len(set(names)) != len(names):
        raise DataError(f"the catalog names an API twice: {sorted({n for n in names if names.count(n) > 1})}")
    if unknown := sorted(catalog.held_out - set(names)):
        raise DataError(f"held-out APIs {unknown} are not in the catalog")
    if not catalog.seen:
        raise DataError("every API is held out: nothing is left to train on")
    for api in catalog.apis:
        where = f"API {api.name!r}"
        if not NAME_RE.fullmatch(api.name):
            raise DataError(f"{where}: a name is 1-64 letters, digits, '_' or '-'")
        if not api.description.strip() or not api.requests:
            raise DataError(f"{where} needs a description and at least one request template")
        for name, p in api.parameters.items():
            if p.type not in PYTHON_TYPES:
                raise DataError(f"{where}.{name}: type {p.type!r} is not one of {', '.join(PYTHON_TYPES)}")
            if not p.values:
                raise DataError(f"{where}.{name} has no values to draw")
            for value, spoken in p.choices():
                ok = isinstance(value, PYTHON_TYPES[p.type]) and (p.type == "boolean" or not isinstance(value, bool))
                if not ok or (isinstance(value, float) and not math.isfinite(value)) or not isinstance(spoken, str):
                    raise DataError(f"{where}.{name}: value {value!r} is not a {p.type} said as text")
        for template in api.requests:
            try:
                fields = template_fields(template)
            except ValueError as e:
                raise DataError(f"{where}: request template {template!r} is not a format string ({e})") from None
            if stray := [f for f in fields if f not in api.parameters]:
                raise DataError(f"{where}: request template {template!r} names unknown parameters {stray}")
            if missing := [f for f in api.required if f not in fields]:
                raise DataError(f"{where}: request template {template!r} leaves out required parameters {missing}")


# ---- the catalog file ---------------------------------------------------------------------------


def save_catalog(catalog: Catalog, path: str | Path) -> None:
    apis = [{"name": api.name, "description": api.description, "held_out": api.name in catalog.held_out,
             "parameters": {name: {"type": p.type, "description": p.description,
                                   "values": [list(v) if isinstance(v, tuple) else v for v in p.values],
                                   **({"default": p.default} if p.default is not None else {})}
                            for name, p in api.parameters.items()},
             "requests": list(api.requests)} for api in catalog.apis]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"apis": apis}, indent=1, ensure_ascii=False) + "\n")


def load_catalog(path: str | Path) -> Catalog:
    """A catalog file: {"apis": [{"name", "description", "held_out", "parameters": {NAME: {"type",
    "description", "values", "default"?}}, "requests": [...]}, ...]}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        apis, held_out = [], set()
        for entry in data["apis"]:
            parameters = {name: Param(p["type"], p.get("description", ""),
                                      tuple(tuple(v) if isinstance(v, list) else v for v in p["values"]), p.get("default"))
                          for name, p in entry.get("parameters", {}).items()}
            apis.append(Api(entry["name"], entry["description"], parameters, tuple(entry["requests"])))
            if entry.get("held_out", False):
                held_out.add(entry["name"])
    except FileNotFoundError:
        raise DataError(f"API catalog {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"API catalog {path} is not JSON: {e}") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise DataError(f"API catalog {path}: an entry lacks a field or has the wrong shape ({e!r}); "
                        "see the format in `groklm apis make`'s apis.json") from None
    return Catalog(tuple(apis), frozenset(held_out))
