"""Generated (un)structuring code: the fast path of `contracts.codec` for well-formed input.

For each attrs class, `compile_structurers` writes out (and compiles, once) one plain Python function that
checks a JSON-ready dict exactly as the cattrs converter of `contracts.codec` would accept it, and builds
the instance directly: exact type checks instead of hook dispatch, the limits of `contracts.limits` and
attrs' number validators evaluated inline (`passes_when`), and the instance filled in without going
through `__init__` (what attrs' own `__init__` does: set every field, run the validators, call
`__attrs_post_init__`). Any other validator is called as attrs would call it.

The fast path never words an error: on anything unexpected (a wrong type, a missing or extra key, a
failing check, an unknown validator's exception) it raises, and the caller runs the cattrs path, which
accepts or rejects the same input and writes today's `$.path: problem` lines. So it only has to be right
about what it accepts: the same object the cattrs path would build. tests/unit/test_codec_fastpath.py
holds it to that for every registered message, on valid and on mutated input.

A type it does not know (a field of type `Any`, a `list`, a non-optional union, an attrs class with
converters or aliases, ...) is structured by the cattrs converter's own hook instead, from inside the
generated code, so the rest of the class still takes the fast path.

`compile_builder` is the same construction for values already of their fields' types (the codec builds
each `Envelope` with it), and `compile_unstructurer` the other direction: the converter's dict.
"""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any

import attrs

Structurer = Callable[[Any], Any]
SlowHook = Callable[[Any, Any], Any]


class Miss(Exception):
    """The fast path does not take this input; the cattrs path decides (and words any error)."""

    @classmethod
    def fail(cls) -> Any:
        """`raise Miss` where a statement cannot go (inside a comprehension)."""
        raise cls


_new = object.__new__
_set = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown
# UUID's slots, set directly (UUID.__init__ sets them with object.__setattr__: the class refuses setattr).
_set_uuid_int = uuid.UUID.__dict__["int"].__set__
_set_uuid_is_safe = uuid.UUID.__dict__["is_safe"].__set__


def to_uuid(value: Any) -> uuid.UUID:
    """`uuid.UUID(value)` for the canonical 36-character form, without its general parsing."""
    if value.__class__ is uuid.UUID:
        return value
    if value.__class__ is not str:
        raise Miss
    digits = value.replace("-", "")
    if len(value) != 36 or len(digits) != 32:
        return uuid.UUID(value)
    # What uuid.UUID does with such a string: `int(hex, 16)` of the text without its dashes (a ':' or
    # brace that UUID would strip makes int() fail here, and the cattrs path decides).
    number = int(digits, 16)
    parsed = _new(uuid.UUID)
    _set_uuid_int(parsed, number)
    _set_uuid_is_safe(parsed, _SAFE_UNKNOWN)
    return parsed


def to_datetime(value: Any) -> dt.datetime:
    """What the codec's datetime hook accepts: an ISO 8601 string (`Z` is UTC); no zone means UTC."""
    if value.__class__ is str:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif value.__class__ is dt.datetime:
        parsed = value
    else:
        raise Miss
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _string_dict_lines(var: str, pad: str) -> list[str]:
    """Statements that check `var` is a dict of strings to strings, and replace it with a copy."""
    return [f"{pad}if {var}.__class__ is not dict: raise Miss",
            f"{pad}for key, item in {var}.items():",
            f"{pad}    if key.__class__ is not str or item.__class__ is not str: raise Miss",
            f"{pad}{var} = dict({var})"]


class _Writer:
    """Collects the source lines and the namespace of one generated module."""

    def __init__(self, slow_hook: Callable[[Any], SlowHook]) -> None:
        self.slow_hook = slow_hook
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {
            "Miss": Miss, "NOTHING": attrs.NOTHING, "_new": _new, "_set": _set, "to_uuid": to_uuid,
            "to_datetime": to_datetime,
        }
        self.functions: dict[Any, str] = {}  # type -> name of its generated function

    def constant(self, value: Any, hint: str) -> str:
        name = f"_{hint}{len(self.ns)}"
        self.ns[name] = value
        return name

    def function_for(self, tp: Any) -> str:
        """The name of a generated function structuring `tp` (written on first use)."""
        if tp not in self.functions:
            name = self.functions[tp] = f"structure_{len(self.functions)}"
            if isinstance(tp, type) and attrs.has(tp):
                if _plain_attrs(tp):
                    self._class_function(name, tp)
                else:
                    self._slow_function(name, tp)
            else:
                body: list[str] = []
                if self.convert(tp, "value", body, "    "):
                    self.lines += [f"def {name}(value):", *body, "    return value", ""]
                else:
                    self._slow_function(name, tp)
        return self.functions[tp]

    def _slow_function(self, name: str, tp: Any) -> None:
        hook = self.constant(self.slow_hook(tp), "hook")
        self.lines += [f"def {name}(value):", f"    return {hook}(value, {self.constant(tp, 'tp')})", ""]

    def convert(self, tp: Any, var: str, out: list[str], pad: str) -> bool:
        """Append statements that check `var` as the type `tp` and replace it with its structured value;
        False when `tp` is not one the fast path knows (nothing appended then)."""
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is str or tp is bool or tp is int:
            # Exact classes: no bool for an int, no number for a string (subclasses go the slow way).
            out.append(f"{pad}if {var}.__class__ is not {tp.__name__}: raise Miss")
        elif tp is float:
            out += [
                f"{pad}if {var}.__class__ is int: {var} = float({var})",
                f"{pad}elif {var}.__class__ is not float: raise Miss",
                f"{pad}if {var} - {var} != 0.0: raise Miss",  # NaN and the infinities
            ]
        elif tp is uuid.UUID:
            out.append(f"{pad}{var} = to_uuid({var})")
        elif tp is dt.datetime:
            out.append(f"{pad}{var} = to_datetime({var})")
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            # The value's member, or KeyError (or TypeError, unhashable): the cattrs path decides.
            out.append(f"{pad}{var} = {self.constant(tp._value2member_map_, 'members')}[{var}]")
        elif origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
            inner: list[str] = []
            (present,) = (a for a in args if a is not type(None))
            if not self.convert(present, var, inner, pad + "    "):
                return False
            out += [f"{pad}if {var} is not None:", *inner]
        elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            out.append(f"{pad}if {var}.__class__ is not list and {var}.__class__ is not tuple: raise Miss")
            if args[0] in (str, int, bool):
                item = args[0].__name__
                out += [f"{pad}for item in {var}:", f"{pad}    if item.__class__ is not {item}: raise Miss",
                        f"{pad}{var} = tuple({var})"]
            else:
                out.append(f"{pad}{var} = tuple([{self.function_for(args[0])}(item) for item in {var}])")
        elif origin is dict and args == (str, str):
            out += _string_dict_lines(var, pad)
        elif isinstance(tp, type) and attrs.has(tp):
            out.append(f"{pad}{var} = {self.function_for(tp)}({var})")
        else:
            return False
        return True

    def _class_function(self, name: str, cls: type[Any]) -> None:
        """`name(data)`: the instance of `cls` from a JSON-ready dict."""
        hints = typing.get_type_hints(cls)
        fields = attrs.fields(cls)
        keys = self.constant(frozenset(a.name for a in fields), "keys")
        body = [
            f"def {name}(data):",
            "    if data.__class__ is not dict: raise Miss",
            f"    if not data.keys() <= {keys}: raise Miss",
        ]
        late: list[str] = []  # validators to call on the built instance, as attrs calls them
        for a in fields:
            if a.default is attrs.NOTHING:
                body.append(f"    value = data[{a.name!r}]")
                body += self._converted(hints[a.name], "    ")
            else:
                body += [f"    if {a.name!r} in data:", f"        value = data[{a.name!r}]"]
                body += self._converted(hints[a.name], "        ")
                body.append(f"    else: value = {self._default(a)}")
            body += self._checked(a, late)
        self.lines += body + self._built(cls, late)

    def builder_function(self, name: str, cls: type[Any]) -> None:
        """`name(**fields)`: `cls(**fields)` for values that already have their fields' types."""
        fields = attrs.fields(cls)
        params = ", ".join(a.name if a.default is attrs.NOTHING else f"{a.name}=NOTHING" for a in fields)
        body = [f"def {name}(*, {params}):"]
        late: list[str] = []
        for a in fields:
            body.append(f"    value = {a.name}")
            if a.default is not attrs.NOTHING:
                body.append(f"    if value is NOTHING: value = {self._default(a)}")
            body += self._checked(a, late)
        self.lines += body + self._built(cls, late)

    def _default(self, a: attrs.Attribute[Any]) -> str:
        default: Any = a.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            return f"{self.constant(default.factory, 'factory')}()"
        return self.constant(a.default, "default")

    def _checked(self, a: attrs.Attribute[Any], late: list[str]) -> list[str]:
        """Check `value` against the validator of `a` (or add the call to `late`), and keep it in the
        field's local."""
        local = f"field_{a.name}"
        condition = None if a.validator is None else _condition(a.validator)
        if condition is not None:
            return [f"    if not ({condition}): raise Miss", f"    {local} = value"]
        if a.validator is not None:  # called on the built instance, as attrs calls it
            late.append(f"    {self.constant(a.validator, 'validator')}(o, {self.constant(a, 'field')}, {local})")
        return [f"    {local} = value"]

    def _built(self, cls: type[Any], late: list[str]) -> list[str]:
        """The instance from the fields' locals: what attrs' `__init__` does after its arguments."""
        body = [f"    o = _new({self.constant(cls, 'cls')})"]
        for a in attrs.fields(cls):
            slot = next((k.__dict__[a.name] for k in cls.__mro__ if a.name in k.__dict__), None)
            if isinstance(slot, types.MemberDescriptorType):  # a slotted class: its slot, set directly
                body.append(f"    {self.constant(slot.__set__, 'set')}(o, field_{a.name})")
            else:
                body.append(f"    _set(o, {a.name!r}, field_{a.name})")
        body += late
        if hasattr(cls, "__attrs_post_init__"):
            body.append("    o.__attrs_post_init__()")
        return [*body, "    return o", ""]

    def _converted(self, tp: Any, pad: str) -> list[str]:
        out: list[str] = []
        if not self.convert(tp, "value", out, pad):
            out = [f"{pad}value = {self.function_for(tp)}(value)"]
        return out


# Names the generated code uses, which a builder's parameter (a field's name) must not hide.
_USED_NAMES = frozenset({"NOTHING", "Miss", "all", "bool", "dict", "float", "int", "isinstance", "len", "str", "tuple"})


def _plain_attrs(cls: type[Any]) -> bool:
    """An attrs class whose `__init__` only sets its fields, runs their validators and calls
    `__attrs_post_init__`: what the generated code does without calling it."""
    if hasattr(cls, "__attrs_pre_init__"):
        return False
    for a in attrs.fields(cls):
        if a.converter is not None or not a.init or a.alias != a.name:
            return False
        if a.name.startswith("_") or a.name in _USED_NAMES:
            return False
        if isinstance(a.default, attrs.Factory) and a.default.takes_self:  # type: ignore[arg-type]
            return False
    return True


# attrs' validator classes (private names; found through the public functions that build them).
_NUMBER: Any = type(attrs.validators.ge(0))
_OPTIONAL: Any = type(attrs.validators.optional(attrs.validators.ge(0)))
_AND: Any = type(attrs.validators.and_(attrs.validators.ge(0), attrs.validators.le(0)))


def _condition(validator: Any) -> str | None:
    """An expression over `value` that holds exactly when `validator` passes; None if not known."""
    if isinstance(validator, _NUMBER):
        bound = validator.bound
        if validator.compare_op in ("<", "<=", ">", ">=") and type(bound) in (int, float) and bound - bound == 0:
            return f"value {validator.compare_op} {bound!r}"
        return None
    if isinstance(validator, _OPTIONAL):
        inner = _condition(validator.validator)
        return None if inner is None else f"value is None or ({inner})"
    if isinstance(validator, _AND):
        parts = [_condition(v) for v in validator._validators]
        return None if None in parts else " and ".join(f"({p})" for p in parts)
    condition = getattr(validator, "passes_when", None)
    return condition if isinstance(condition, str) else None


def compile_structurers(types_: list[Any], slow_hook: Callable[[Any], SlowHook]) -> dict[Any, Structurer]:
    """One generated function per type in `types_` (and the classes they contain): each takes
    JSON-ready data and returns the structured value, or raises for the cattrs path to decide.
    `slow_hook(tp)` is the converter's hook for a type the fast path does not know."""
    writer = _Writer(slow_hook)
    names = {tp: writer.function_for(tp) for tp in types_}
    source = "\n".join(writer.lines)
    exec(compile(source, "<contracts.fastpath generated>", "exec"), writer.ns)
    return {tp: writer.ns[name] for tp, name in names.items()}


class _UnstructureWriter:
    """The other direction: one function per attrs class that returns the JSON-ready dict the cattrs
    converter's `unstructure` returns (every field, in order; enums by value, UUIDs and datetimes as
    text, tuples as lists). A type it does not know is unstructured by the converter's own hook."""

    def __init__(self, slow_hook: Callable[[Any], Callable[[Any], Any]]) -> None:
        self.slow_hook = slow_hook
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {}
        self.functions: dict[Any, str] = {}
        self.names = 0

    def function_for(self, cls: Any) -> str:
        if cls not in self.functions:
            name = self.functions[cls] = f"unstructure_{len(self.functions)}"
            hints = typing.get_type_hints(cls)
            items = [f"{a.name!r}: {self.expression(hints[a.name], f'o.{a.name}')}" for a in attrs.fields(cls)]
            self.lines += [f"def {name}(o):", "    return {" + ", ".join(items) + "}", ""]
        return self.functions[cls]

    def expression(self, tp: Any, var: str) -> str:
        """An expression giving the unstructured value of `var` (a name or an attribute), of type `tp`."""
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp in (str, int, float, bool):
            return var
        if tp is uuid.UUID:
            return f"str({var})"
        if tp is dt.datetime:
            return f"{var}.isoformat()"
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return f"{var}.value"
        if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
            (present,) = (a for a in args if a is not type(None))
            inner = self.expression(present, var)
            return var if inner == var else f"(None if {var} is None else {inner})"
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            self.names += 1
            item = f"item{self.names}"
            inner = self.expression(args[0], item)
            return f"list({var})" if inner == item else f"[{inner} for {item} in {var}]"
        if origin is dict and args == (str, str):
            return f"dict({var})"
        if isinstance(tp, type) and attrs.has(tp):
            return f"{self.function_for(tp)}({var})"
        hook = f"_hook{len(self.ns)}"
        self.ns[hook] = self.slow_hook(tp)
        return f"{hook}({var})"


def compile_unstructurer(cls: type[Any], slow_hook: Callable[[Any], Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """The generated `unstructure` of the attrs class `cls`; `slow_hook(tp)` is the converter's
    unstructure hook for a type the generator does not know. It raises (anything) on an instance whose
    fields do not have their declared types; the caller then asks the converter."""
    writer = _UnstructureWriter(slow_hook)
    name = writer.function_for(cls)
    exec(compile("\n".join(writer.lines), "<contracts.fastpath generated>", "exec"), writer.ns)
    return writer.ns[name]  # type: ignore[no-any-return]


class _JsonWriter:
    """Like `_UnstructureWriter`, for orjson to write: the same dict, but only from fields that hold
    exactly their declared types (anything else raises, and the caller goes the stdlib way), with no
    NaN or infinity (which orjson would write as null), and with every float orjson would spell
    otherwise than Python's `repr` (magnitudes under 1e-4: `0.00001` for `1e-05`) passed as a
    `orjson.Fragment` of its `repr`. So `orjson.dumps` of it is byte for byte what `json.dumps` writes."""

    def __init__(self, fragment: Callable[[str], Any]) -> None:
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {"Miss": Miss, "_fragment": fragment, "_UUID": uuid.UUID, "_datetime": dt.datetime}
        self.functions: dict[Any, str] = {}

    def function_for(self, cls: Any) -> str | None:
        """The name of the function writing `cls`; None when a field's type is not one it knows."""
        if cls not in self.functions:
            name = self.functions[cls] = f"json_{len(self.functions)}"
            hints = typing.get_type_hints(cls)
            body = [f"def {name}(o):"]
            for i, a in enumerate(attrs.fields(cls)):
                body.append(f"    v{i} = o.{a.name}")
                if not self.check(hints[a.name], f"v{i}", body, "    "):
                    del self.functions[cls]
                    return None
            items = ", ".join(f"{a.name!r}: v{i}" for i, a in enumerate(attrs.fields(cls)))
            self.lines += [*body, f"    return {{{items}}}", ""]
        return self.functions[cls]

    def check(self, tp: Any, var: str, out: list[str], pad: str) -> bool:
        """Statements that check `var` is exactly of type `tp` and replace it with what orjson is to write."""
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if tp is str or tp is bool:
            out.append(f"{pad}if {var}.__class__ is not {tp.__name__}: raise Miss")
        elif tp is int or tp is float:
            # An int in a float field is written as the int, by json.dumps as by orjson (both up to 64 bits).
            out += [f"{pad}if {var}.__class__ is float:",
                    f"{pad}    if {var} - {var} != 0.0: raise Miss",
                    f"{pad}    if -1e-4 < {var} < 1e-4 and {var} != 0.0: {var} = _fragment(repr({var}))",
                    f"{pad}elif {var}.__class__ is not int: raise Miss"] if tp is float else [
                    f"{pad}if {var}.__class__ is not int: raise Miss"]
        elif tp is uuid.UUID:
            out += [f"{pad}if {var}.__class__ is not _UUID: raise Miss", f"{pad}{var} = str({var})"]
        elif tp is dt.datetime:
            out += [f"{pad}if {var}.__class__ is not _datetime: raise Miss", f"{pad}{var} = {var}.isoformat()"]
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            name = f"_enum{len(self.ns)}"
            self.ns[name] = tp
            out += [f"{pad}if {var}.__class__ is not {name}: raise Miss", f"{pad}{var} = {var}.value",
                    f"{pad}if {var}.__class__ is not str: raise Miss"]
        elif origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
            (present,) = (a for a in args if a is not type(None))
            inner: list[str] = []
            if not self.check(present, var, inner, pad + "    "):
                return False
            out += [f"{pad}if {var} is not None:", *inner]
        elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            out.append(f"{pad}if {var}.__class__ is not tuple and {var}.__class__ is not list: raise Miss")
            if args[0] is str:
                out += [f"{pad}for item in {var}:", f"{pad}    if item.__class__ is not str: raise Miss",
                        f"{pad}{var} = list({var})"]
            elif isinstance(args[0], type) and attrs.has(args[0]):
                function = self.function_for(args[0])
                if function is None:
                    return False
                name = f"_cls{len(self.ns)}"
                self.ns[name] = args[0]
                out.append(f"{pad}{var} = [{function}(item) if item.__class__ is {name} else Miss.fail() "
                           f"for item in {var}]")
            else:
                return False
        elif origin is dict and args == (str, str):
            out += _string_dict_lines(var, pad)
        elif isinstance(tp, type) and attrs.has(tp):
            function = self.function_for(tp)
            if function is None:
                return False
            name = f"_cls{len(self.ns)}"
            self.ns[name] = tp
            out += [f"{pad}if {var}.__class__ is not {name}: raise Miss", f"{pad}{var} = {function}({var})"]
        else:
            return False
        return True


def compile_json_writer(cls: type[Any], fragment: Callable[[str], Any]) -> Callable[[Any], Any] | None:
    """The generated function giving what orjson is to write for an instance of `cls` (see `_JsonWriter`);
    None when `cls` has a field of a type it does not know. `fragment` is `orjson.Fragment`."""
    writer = _JsonWriter(fragment)
    name = writer.function_for(cls)
    if name is None:
        return None
    exec(compile("\n".join(writer.lines), "<contracts.fastpath generated>", "exec"), writer.ns)
    return writer.ns[name]  # type: ignore[no-any-return]


def compile_builder(cls: type[Any]) -> Callable[..., Any]:
    """`cls(**fields)` without `__init__`, for values of the right types; raises (anything) where
    `cls(**fields)` would reject them or where a validator it cannot inline fails."""
    if not _plain_attrs(cls):
        raise TypeError(f"{cls.__qualname__}: only plain attrs classes get a builder")
    writer = _Writer(lambda tp: None)  # type: ignore[arg-type, return-value]
    writer.builder_function("build", cls)
    exec(compile("\n".join(writer.lines), "<contracts.fastpath generated>", "exec"), writer.ns)
    return writer.ns["build"]  # type: ignore[no-any-return]


def generated_source(tp: Any, slow_hook: Callable[[Any], SlowHook]) -> str:
    """The generated code for `tp`, to read."""
    writer = _Writer(slow_hook)
    writer.function_for(tp)
    return "\n".join(writer.lines)
