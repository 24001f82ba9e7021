"""Options that belong to the plugins that read them: declared once, as a dataclass, with one default each.

A connector or fetcher names its options class in `options` (llm's per-model `Options`); each field is
made with `option(default, help)`. `kb ingest -o KEY VALUE` sets any declared option, converted to the
field's type; the flags users already type (`--depth`, `--ocr`) are built from the same fields. The
engine still hands plugins a plain dict by option name (`SourceFile.options`); a plugin reads its own
with `read_options(WebOptions, context.options)`, which fills in the declared defaults.

Importing this module costs only dataclasses and typing: the CLI builds `kb ask`'s options from it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import KBError

T = TypeVar("T")


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    flag: str | None = None,
    scale: float = 1,
    envvar: str | None = None,
    path: bool = False,
) -> Any:
    """A dataclass field for an option: its one default and its help, as `kb plugins` shows them.

    `choices` and `minimum` are checked wherever the option is set; `flag` is the older command-line
    name it keeps (`--depth`), given in units of `scale` (`--max-hours` sets seconds, times 3600).
    """
    metadata = {"help": help, "choices": choices, "minimum": minimum, "flag": flag, "scale": scale}
    metadata |= {"envvar": envvar, "path": path}
    if isinstance(default, (list, dict, set)):
        raise TypeError("An option's default must be immutable (a tuple, not a list).")
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class OptionInfo:
    """One declared option, as `kb plugins` lists it and `-o` checks it."""

    name: str
    type: str
    """"bool", "int", "float", "str" or "list" (a list takes `-o` once per value)."""
    default: Any
    help: str
    owner: str
    """The options class that declares it ("WebOptions")."""
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    flag: str | None = None
    scale: float = 1
    envvar: str | None = None
    path: bool = False
    """A file name (the flag checks it is not a folder)."""
    optional: bool = False
    """None is a valid value (the default means "not set": the plugin decides)."""

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "type": self.type, "default": _jsonable(self.default), "help": self.help}
        if self.choices:
            data["choices"] = list(self.choices)
        if self.flag:
            data["flag"] = self.flag
        return data

    def convert(self, value: Any) -> Any:
        """A value from the command line or a configuration file as the option's type; KBError if it is not."""
        if value is None and self.optional:
            return None
        if self.type == "list":
            items = [value] if isinstance(value, str) else list(value)
            return tuple(str(item) for item in items)
        try:
            converted = _CONVERT[self.type](value)
        except (TypeError, ValueError):
            raise KBError(f"The option {self.name} takes {_A[self.type]}, not {value!r}.") from None
        if self.choices and converted not in self.choices:
            raise KBError(f"The option {self.name} is one of {', '.join(self.choices)}, not {value!r}.")
        if self.minimum is not None and converted < self.minimum:
            raise KBError(f"The option {self.name} is at least {_number(self.minimum)}, not {value!r}.")
        return converted


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


_CONVERT = {"bool": _bool, "int": _int, "float": float, "str": str}
_A = {"bool": "true or false", "int": "a whole number", "float": "a number", "str": "text"}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _type_name(hint: Any) -> tuple[str, bool]:
    """The option type of a field's annotation, and whether it may be None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _type_name(inner[0])[0], True
    if typing.get_origin(hint) in (tuple, list):
        return "list", False
    name = getattr(hint, "__name__", str(hint))
    if name not in _CONVERT:
        raise TypeError(f"An option is a bool, int, float, str or tuple of str, not {hint!r}.")
    return name, False


def describe(options_cls: type) -> list[OptionInfo]:
    """The options a class declares, inherited ones first (a shared `allow_private` is declared once)."""
    hints = typing.get_type_hints(options_cls)
    found = []
    for f in dataclasses.fields(options_cls):
        type_name, optional = _type_name(hints[f.name])
        meta = f.metadata
        owner = next(c.__name__ for c in options_cls.__mro__ if f.name in getattr(c, "__annotations__", {}))
        found.append(
            OptionInfo(
                name=f.name,
                type=type_name,
                default=f.default,
                help=meta.get("help", ""),
                owner=owner,
                choices=meta.get("choices"),
                minimum=meta.get("minimum"),
                flag=meta.get("flag"),
                scale=meta.get("scale", 1),
                envvar=meta.get("envvar"),
                path=meta.get("path", False),
                optional=optional or f.default is None,
            )
        )
    return found


def read_options(options_cls: type[T], values: Mapping[str, Any]) -> T:
    """A plugin's options from the engine's dict: a value given (not None) where there is one, else the
    declared default. Values reach here checked already (`-o` and the flags convert them)."""
    names = {f.name for f in dataclasses.fields(options_cls)}  # type: ignore[arg-type]
    return options_cls(**{k: v for k, v in values.items() if k in names and v is not None})


def merge(plugins: Iterable[tuple[str, type]]) -> dict[str, OptionInfo]:
    """Every option the plugins declare, by name. Two plugins may share an option (web and yt-dlp read
    `allow_private`) only through one declaration: the same name declared twice apart is refused, so a
    `-o` value cannot mean two things."""
    table: dict[str, OptionInfo] = {}
    for plugin, options_cls in plugins:
        for info in describe(options_cls):
            known = table.get(info.name)
            if known is not None and known != info:
                raise KBError(
                    f"The option {info.name} is declared twice ({known.owner} and {info.owner}, in {plugin}); "
                    "share one declaration."
                )
            table[info.name] = info
    return table


def parse_pairs(pairs: Iterable[tuple[str, str]], declared: Mapping[str, OptionInfo]) -> dict[str, Any]:
    """`-o KEY VALUE` pairs as option values; KBError naming the valid keys for an unknown one."""
    values: dict[str, Any] = {}
    for key, value in pairs:
        info = declared.get(key.replace("-", "_"))
        if info is None:
            raise KBError(f"No option named {key!r}; the options are: {', '.join(sorted(declared))}.")
        if info.type == "list":
            values[info.name] = values.get(info.name, ()) + info.convert(value)
        else:
            values[info.name] = info.convert(value)
    return values


@dataclass(frozen=True)
class LLMOptions:
    """How an answer's LLM is chosen and run, declared once for every surface that asks: `kb ask`,
    `kb eval`, `kb mcp`, `kb questions`, `kb serve` and its ask page and API (the plugin's configuration)."""

    model: str | None = option(
        None,
        "A built-in model by name (see `kb models`; default: qwen2.5-coder-1.5b) or a GGUF file.",
        flag="--model",
        envvar="KB_MODEL",
        path=True,
    )
    llm_url: str | None = option(
        None,
        "An OpenAI-compatible server instead, e.g. http://127.0.0.1:8080/v1.",
        flag="--llm-url",
        envvar="KB_LLM_URL",
    )
    llm_model: str | None = option(None, "Model name to ask the --llm-url server for.", flag="--llm-model")
    n_ctx: int = option(4096, "Context size for --model.", minimum=512, flag="--n-ctx")
    threads: int | None = option(None, "CPU threads for --model (default: all).", minimum=1, flag="--threads")
    llm_timeout: float = option(120, "Seconds to wait for a --llm-url server.", minimum=1, flag="--llm-timeout")
    fast: bool = option(
        False, "Skip the evidence check: the model writes from the passages in one call.", flag="--fast"
    )
    judge: str = option(
        "auto",
        "Who decides what is evidence: the model, choosing exact quotes (llm), or retrieval scores alone "
        "(auto: the model when it can judge; the low-memory models cannot).",
        choices=("auto", "retrieval", "llm"),
        flag="--judge",
    )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LLMOptions:
        """From the plugin's configuration (values may be strings, as a hand-written metadata file has
        them); keys that are not LLM options (the API's `candidates`) are left to their readers."""
        declared = {info.name: info for info in describe(cls)}
        return cls(**{k: declared[k].convert(v) for k, v in config.items() if k in declared and v is not None})

    def check(self) -> LLMOptions:
        if self.model and self.llm_url:
            raise KBError("Give either --model or --llm-url, not both.")
        return self

    def config(self) -> dict[str, Any]:
        """The options set, as the plugin's configuration holds them (what `kb serve` hands Datasette)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def load_args(self) -> dict[str, Any]:
        """`kb.answer.load_llm`'s arguments."""
        return {
            "model_path": self.model,
            "llm_url": self.llm_url,
            "llm_model": self.llm_model,
            "n_ctx": self.n_ctx,
            "threads": self.threads,
            "llm_timeout": self.llm_timeout,
        }

    def load(self) -> Any:
        """The LLM these options name (a server's client, or a GGUF model loaded now)."""
        from .answer import load_llm

        return load_llm(**self.load_args())

    def settings(self) -> Any:
        """The AskSettings these options set (the rest keep their defaults)."""
        from .answer import AskSettings

        return AskSettings(fast=self.fast, judge=self.judge)


def click_option(info: OptionInfo, dest: str | None = None) -> Any:
    """The command-line flag (a `click.Option`) of a declared option (`--depth` for max_depth), its
    default and help the declaration's; the value reaches the command as `dest` (the option's own
    name unless given), in the flag's units."""
    import click

    kwargs: dict[str, Any] = {"help": info.help, "envvar": info.envvar}
    default = info.default
    if info.type == "bool":
        kwargs["is_flag"] = True
    elif info.type == "list":
        kwargs["multiple"] = True
    else:
        if default is not None:
            scaled = default / info.scale if info.scale != 1 else default
            kwargs["default"] = int(scaled) if isinstance(scaled, float) and scaled.is_integer() else scaled
            kwargs["show_default"] = True
        low = info.minimum / info.scale if info.minimum is not None and info.scale != 1 else info.minimum
        if info.choices:
            kwargs["type"] = click.Choice(list(info.choices))
        elif info.path:
            kwargs["type"] = click.Path(dir_okay=False)
        elif info.type == "int":
            kwargs["type"] = click.IntRange(min=low) if low is not None else int
        elif info.type == "float":
            kwargs["type"] = click.FloatRange(min=low) if low is not None else float
    return click.Option([info.flag, dest or info.name], **kwargs)


def click_options(options_cls: type) -> Any:
    """A decorator adding the flag of every option `options_cls` declares one for, in declared order."""
    flags = [click_option(info) for info in describe(options_cls) if info.flag]

    def decorate(func: Any) -> Any:
        # As click.option() does: a command collects its decorated parameters from here, last first.
        func.__dict__.setdefault("__click_params__", []).extend(reversed(flags))
        return func

    return decorate
