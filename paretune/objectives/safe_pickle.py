"""Reading data out of pickle files without unpickling them.

``pickle.load`` runs whatever a file asks for. The benchmark sources (``.pt`` lists of floats,
a pandas DataFrame pickle) are read here by interpreting their opcodes
(:func:`pickletools.genops`) on a small stack machine: plain data (numbers, strings, bytes,
lists, tuples, dicts, sets) is built as usual, while a global, a call (``REDUCE``,
``NEWOBJ``) or a ``BUILD`` becomes an inert :class:`Call` record. Nothing is imported and
nothing is called. :func:`to_data` then turns the few records a numeric table needs (numpy
arrays and dtypes, slices, pandas indexes and DataFrames) into values, and refuses any
other.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class PickleDataError(ValueError):
    """A pickle holds something this reader does not rebuild (or is malformed)."""


@dataclass(frozen=True)
class Global:
    """A ``module.name`` the pickle refers to (never imported)."""

    module: str
    name: str

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False)
class Call:
    """``func(*args, **kwargs)`` as the pickle asks for it, plus a later ``BUILD`` state."""

    func: Any
    args: tuple
    kwargs: dict = field(default_factory=dict)
    state: Any = None
    items: list = field(default_factory=list)


_MARK = object()
_REFUSED = {
    "PERSID",
    "BINPERSID",
    "EXT1",
    "EXT2",
    "EXT4",
    "INST",
    "OBJ",
    "NEXT_BUFFER",
    "READONLY_BUFFER",
}


def parse(data: bytes, what: str = "pickle") -> Any:
    """The object tree of a pickle, with globals and calls left as :class:`Global` /
    :class:`Call` records.

    Raises:
        PickleDataError: a malformed pickle or an opcode that needs outside help
            (persistent ids, extension registry, out-of-band buffers).
    """
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        if not marks:
            raise PickleDataError(f"{what}: malformed pickle (no MARK)")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in _REFUSED:
                raise PickleDataError(f"{what}: opcode {name} is not supported by the safe reader")
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                break
            if name == "MARK":
                marks.append(len(stack))
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "NONE":
                stack.append(None)
            elif name == "NEWTRUE":
                stack.append(True)
            elif name == "NEWFALSE":
                stack.append(False)
            elif name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"):
                stack.append(arg)
            elif name in ("FLOAT", "BINFLOAT"):
                stack.append(float(arg))
            elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                stack.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
            elif name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
                stack.append(bytes(arg))
            elif name == "BYTEARRAY8":
                stack.append(bytearray(arg))
            elif name in ("UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"):
                stack.append(str(arg))
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "LIST":
                stack.append(pop_mark())
            elif name == "APPEND":
                value = stack.pop()
                _extend(stack[-1], [value], what)
            elif name == "APPENDS":
                items = pop_mark()
                _extend(stack[-1], items, what)
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "DICT":
                items = pop_mark()
                stack.append(dict(zip(items[::2], items[1::2], strict=True)))
            elif name == "SETITEM":
                value = stack.pop()
                key = stack.pop()
                _setitems(stack[-1], [key, value], what)
            elif name == "SETITEMS":
                items = pop_mark()
                _setitems(stack[-1], items, what)
            elif name == "EMPTY_SET":
                stack.append(set())
            elif name == "ADDITEMS":
                items = pop_mark()
                if not isinstance(stack[-1], set):
                    raise PickleDataError(f"{what}: ADDITEMS on a {type(stack[-1]).__name__}")
                stack[-1].update(items)
            elif name == "FROZENSET":
                stack.append(frozenset(pop_mark()))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[int(arg)])
            elif name == "GLOBAL":
                module, _, qual = str(arg).partition(" ")
                stack.append(Global(module, qual))
            elif name == "STACK_GLOBAL":
                qual = stack.pop()
                module = stack.pop()
                stack.append(Global(str(module), str(qual)))
            elif name == "REDUCE":
                args = stack.pop()
                func = stack.pop()
                stack.append(Call(func, tuple(args)))
            elif name == "NEWOBJ":
                args = stack.pop()
                cls = stack.pop()
                stack.append(Call(cls, tuple(args)))
            elif name == "NEWOBJ_EX":
                kwargs = stack.pop()
                args = stack.pop()
                cls = stack.pop()
                stack.append(Call(cls, tuple(args), dict(kwargs)))
            elif name == "BUILD":
                state = stack.pop()
                target = stack[-1]
                if isinstance(target, Call):
                    target.state = state
                elif isinstance(target, dict) and isinstance(state, dict):
                    target.update(state)
                else:
                    raise PickleDataError(f"{what}: BUILD on a {type(target).__name__}")
            else:
                raise PickleDataError(f"{what}: opcode {name} is not supported by the safe reader")
    except PickleDataError:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise PickleDataError(f"{what}: malformed pickle ({exc})") from None
    if len(stack) != 1:
        raise PickleDataError(f"{what}: malformed pickle ({len(stack)} objects left on the stack)")
    return stack[0]


def _extend(target: Any, items: list[Any], what: str) -> None:
    if isinstance(target, list):
        target.extend(items)
    elif isinstance(target, Call):
        target.items.extend(items)
    else:
        raise PickleDataError(f"{what}: APPEND on a {type(target).__name__}")


def _setitems(target: Any, items: list[Any], what: str) -> None:
    if not isinstance(target, dict):
        raise PickleDataError(f"{what}: SETITEM on a {type(target).__name__}")
    for key, value in zip(items[::2], items[1::2], strict=True):
        target[key] = value


def read_torch_zip(data: bytes, what: str = "torch file") -> Any:
    """The object tree of a ``torch.save`` zip file (``archive/data.pkl``) holding plain data.

    Tensors (persistent ids) are refused: the HELP latency files hold lists of numbers.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(names) != 1:
                raise PickleDataError(f"{what}: no data.pkl in the zip ({z.namelist()[:5]})")
            return parse(z.read(names[0]), what)
    except zipfile.BadZipFile as exc:
        raise PickleDataError(f"{what}: not a torch zip file ({exc})") from None


# ---------------------------------------------------------------------- rebuilding data
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")
_FROMBUFFER = ("numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer")


def _qual(obj: Any) -> str:
    return obj.qualname if isinstance(obj, Global) else type(obj).__name__


def to_data(obj: Any, what: str = "pickle") -> Any:
    """Plain values for the records numeric data needs: numpy arrays and dtypes, slices,
    pandas ``Index``/``RangeIndex`` (as arrays / ranges); :class:`Call` records of pandas
    containers are kept with their parts converted. Anything else is refused by name.
    """
    memo: dict[int, Any] = {}

    def conv(o: Any) -> Any:
        key = id(o)
        if key in memo:
            return memo[key]
        if isinstance(o, list):
            out: Any = [conv(v) for v in o]
        elif isinstance(o, tuple):
            out = tuple(conv(v) for v in o)
        elif isinstance(o, dict):
            out = {conv(k): conv(v) for k, v in o.items()}
        elif isinstance(o, Global):
            out = o
        elif isinstance(o, Call):
            out = _call(o, conv, what)
        else:
            out = o
        memo[key] = out
        return out

    try:
        return conv(obj)
    except RecursionError:
        raise PickleDataError(f"{what}: nested too deeply") from None


def _dtype(call: Call, what: str) -> np.dtype:
    if not call.args or not isinstance(call.args[0], str):
        raise PickleDataError(f"{what}: numpy.dtype without a type code")
    code = call.args[0]
    if code in ("O8", "O4", "O"):
        return np.dtype(object)
    dt = np.dtype(code)
    state = call.state
    if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
        order = state[1]
        if order in ("<", ">"):
            dt = dt.newbyteorder(order)
    return dt


def _call(call: Call, conv, what: str) -> Any:
    func = call.func
    name = _qual(func)
    if name == "numpy.dtype":
        return _dtype(call, what)
    if name in (f"{m}._reconstruct" for m in _NUMPY_MODULES):
        state = call.state
        if not (isinstance(state, tuple) and len(state) == 5):
            raise PickleDataError(f"{what}: numpy array without its state")
        _version, shape, dtype, fortran, raw = state
        dtype = conv(dtype)
        if not isinstance(dtype, np.dtype):
            raise PickleDataError(f"{what}: numpy array with dtype {_qual(dtype)}")
        if dtype == np.dtype(object):
            values = conv(raw)
            if not isinstance(values, list):
                raise PickleDataError(f"{what}: object array whose items are not a list")
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            return arr.reshape(shape, order="F" if fortran else "C")
        raw = conv(raw)
        raw = raw.encode("latin-1") if isinstance(raw, str) else bytes(raw)  # Python 2 str
        return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    if name in (f"{m}.scalar" for m in _NUMPY_MODULES):  # a numpy scalar: (dtype, raw bytes)
        dtype, raw = (conv(a) for a in call.args)
        if not isinstance(dtype, np.dtype) or dtype == np.dtype(object):
            raise PickleDataError(f"{what}: numpy scalar of dtype {dtype!r}")
        raw = raw.encode("latin-1") if isinstance(raw, str) else bytes(raw)
        return np.frombuffer(raw, dtype=dtype)[0].item()
    if name in _FROMBUFFER:
        buf, dtype, shape, order = (conv(a) for a in call.args)
        if not isinstance(dtype, np.dtype) or dtype == np.dtype(object):
            raise PickleDataError(f"{what}: buffer with dtype {dtype!r}")
        return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape, order=order)
    if name == "_codecs.encode":  # how protocol 2 writes bytes: encode(text, "latin1")
        text, encoding = (conv(a) for a in call.args)
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise PickleDataError(f"{what}: _codecs.encode({encoding!r})")
        return text.encode("latin-1")
    if name in ("builtins.set", "__builtin__.set", "builtins.frozenset", "__builtin__.frozenset"):
        items = conv(call.args[0]) if call.args else []
        if not isinstance(items, list | tuple):
            raise PickleDataError(f"{what}: {name} of a {type(items).__name__}")
        return set(items) if name.endswith(".set") else frozenset(items)
    if name in ("builtins.slice", "__builtin__.slice"):
        return slice(*(conv(a) for a in call.args))
    if name == "pandas.core.indexes.base._new_Index":
        cls, d = call.args[0], conv(call.args[1])
        if not isinstance(d, Mapping):
            raise PickleDataError(f"{what}: pandas index without its data")
        if _qual(cls) == "pandas.core.indexes.range.RangeIndex":
            return range(d.get("start", 0), d["stop"], d.get("step", 1))
        if "data" not in d:
            raise PickleDataError(f"{what}: pandas {_qual(cls)} without data")
        return np.asarray(d["data"])
    if name in (
        "pandas.core.frame.DataFrame",
        "pandas.core.internals.managers.BlockManager",
    ):
        return Call(func, tuple(conv(a) for a in call.args), {}, conv(call.state))
    raise PickleDataError(f"{what}: holds a {name} object, which the safe reader does not rebuild")


def read_dataframe(data: bytes, what: str = "pandas pickle") -> dict[str, np.ndarray]:
    """The columns of a pickled pandas ``DataFrame`` (``pd.to_pickle``) as numpy arrays,
    in column order, rebuilt from its blocks without unpickling.

    Raises:
        PickleDataError: not a DataFrame pickle of a supported layout.
    """
    tree = to_data(parse(data, what), what)
    if not (isinstance(tree, Call) and _qual(tree.func) == "pandas.core.frame.DataFrame"):
        raise PickleDataError(
            f"{what}: not a pickled pandas DataFrame ({_qual(getattr(tree, 'func', tree))})"
        )
    state = tree.state if isinstance(tree.state, Mapping) else {}
    mgr = state.get("_mgr", state.get("_data"))
    if not (isinstance(mgr, Call) and isinstance(mgr.state, tuple) and len(mgr.state) == 4):
        raise PickleDataError(f"{what}: DataFrame without a supported block manager")
    extra = mgr.state[3]
    layout = extra.get("0.14.1") if isinstance(extra, Mapping) else None
    if not isinstance(layout, Mapping):
        raise PickleDataError(f"{what}: DataFrame blocks in an unsupported layout")
    axes = layout["axes"]
    columns = list(np.asarray(axes[0]))
    nrows = len(axes[1])
    out: dict[Any, np.ndarray] = {}
    for block in layout["blocks"]:
        values = np.asarray(block["values"])
        locs = block["mgr_locs"]
        positions = (
            list(range(len(columns)))[locs] if isinstance(locs, slice) else list(np.asarray(locs))
        )
        values = values.reshape(len(positions), nrows)
        for pos, row in zip(positions, values, strict=True):
            out[columns[int(pos)]] = row
    missing = [c for c in columns if c not in out]
    if missing:
        raise PickleDataError(f"{what}: columns without data: {missing}")
    return {str(c): out[c] for c in columns}
