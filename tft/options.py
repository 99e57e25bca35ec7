"""Typed options for every stage: one table per stage says each option's type, range, choices and help;
the click flags, the YAML keys and the `--help` lines are generated from it, and every value, from a flag
or a config file, goes through `parse`, so a bad one is one line naming the option.

A stage declares a (frozen) dataclass of defaults and a `{field: Rule}` table:

    @dataclass(frozen=True)
    class ExportConfig:
        max_batch: int = 64
    EXPORT = Options(ExportConfig, {"max_batch": Rule(int, "Largest batch served.", low=1, high=4096)})

    @EXPORT.click_options            # --max-batch, with its help and default
    def export_command(**values): cfg = EXPORT.build(values)

Used by `tft train` (tft/train/config.py), `tft export` (tft/export/options.py), `tft serve build`
(tft/serve/options.py) and `tft pipeline`, which composes the three.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from tft.errors import TftError


@dataclass(frozen=True)
class Rule:
    """How one option is read: its type, its bounds (inclusive unless `above`), its choices, its help line."""

    type: type
    help: str
    low: float | None = None
    high: float | None = None
    above: bool = False  # low is exclusive
    below: bool = False  # high is exclusive
    metavar: str | None = None
    flag: bool = False  # a plain --x flag (no --no-x)
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None  # a callable reads a registry
    name: str | None = None  # the flag, when it is not --<field>

    def allowed(self) -> tuple[str, ...] | None:
        return self.choices() if callable(self.choices) else self.choices


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def shown(value) -> str:
    # as typed when that is one plain line; repr otherwise, so a newline in a value never breaks the one line
    plain = isinstance(value, str) and value.strip() and len(value) < 80 and value.isprintable()
    return value if plain else repr(value)[:80]


def _number(rule: Rule, value, where: str):
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise TftError(f"{where}{shown(value)}: expected a number")
    try:
        number = float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        raise TftError(f"{where}{shown(value)}: expected a number") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise TftError(f"{where}{shown(value)}: expected a finite number")
    if rule.type is int:
        if isinstance(number, float):
            if not number.is_integer():
                raise TftError(f"{where}{shown(value)}: expected a whole number")
            number = int(number)
    else:
        number = float(number)
    if rule.low is not None and (number <= rule.low if rule.above else number < rule.low):
        raise TftError(f"{where}{shown(value)}: must be {'greater than' if rule.above else 'at least'} {rule.low:g}")
    if rule.high is not None and (number >= rule.high if rule.below else number > rule.high):
        raise TftError(f"{where}{shown(value)}: must be {'below' if rule.below else 'at most'} {rule.high:g}")
    return number


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML with a key given twice is an error naming the key and its line, not the last value silently."""


def _mapping(loader, node, deep=False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise TftError(f"{loader.name}:{key_node.start_mark.line + 1}: option '{key}' is given twice "
                           f"(first on line {seen[key]}); keep one")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml_mapping(path: str | Path) -> dict:
    """A config file as a mapping, or one line naming the file (and line) when it is not one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TftError(f"{path}: config file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise TftError(f"{path}: cannot read this config file ({type(e).__name__})") from None
    try:
        loader = _UniqueKeyLoader(text)
        loader.name = str(path)
        try:
            data = loader.get_single_data() or {}
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TftError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise TftError(f"{path}: expected a mapping of option: value")
    return data


class Options:
    """One stage's options: its dataclass of defaults and its rules."""

    def __init__(self, config_cls, rules: dict[str, Rule], check: Callable[[Any], None] | None = None,
                 click_types: bool = False):
        """`click_types`: flags are typed by click (IntRange, FloatRange, Choice: its usage errors, exit 2);
        otherwise every flag is text parsed here, as YAML values are (`tft train`'s way)."""
        names = {f.name for f in dataclasses.fields(config_cls)}
        assert set(rules) <= names, f"rules for unknown fields: {set(rules) - names}"
        self.cls, self.rules, self._check, self.click_types = config_cls, rules, check, click_types
        self.defaults = config_cls(**{f.name: f.default for f in dataclasses.fields(config_cls)
                                      if f.default is not dataclasses.MISSING})

    def keys(self) -> set[str]:
        return set(self.rules)

    def flag(self, name: str) -> str:
        return self.rules[name].name or flag(name)

    def parse(self, name: str, value, source: str | None = None):
        """One option's value (a string from the command line, or any YAML value) -> its typed value."""
        rule = self.rules[name]
        where = f"{source}: {name}: " if source else f"{self.flag(name)} "
        if value is None:
            default = getattr(self.defaults, name)
            if default is None or rule.type is str:
                return None
            raise TftError(f"{where}null: expected a {'true/false' if rule.type is bool else 'value'}")
        if rule.type is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "false"):
                return text == "true"
            raise TftError(f"{where}{shown(value)}: expected true or false")
        if rule.type is str:
            if not isinstance(value, str) or not value.strip() or "\0" in value:
                raise TftError(f"{where}{shown(value)}: expected a non-empty text")
            allowed = rule.allowed()
            if allowed and value not in allowed:
                raise TftError(f"{where}{shown(value)}: choose one of {', '.join(allowed)}")
            return value
        return _number(rule, value, where)

    def load_yaml(self, path: str | Path, known: set[str] | None = None) -> dict:
        """Read a config file; keys mirror the flags (dashes or underscores); every value is checked."""
        data = read_yaml_mapping(path)
        out = {}
        known = known or self.keys()
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise TftError(f"{path}: unknown option '{key}'")
            if name in out:
                raise TftError(f"{path}: option '{key}' is given twice (as {name.replace('_', '-')} and "
                               f"{name}); keep one")
            out[name] = self.parse(name, value, str(path))
        return out

    def build(self, cli_values: dict, file_values: dict | None = None, **fixed):
        """Defaults < config file (already parsed) < flags given on the command line (parsed here)."""
        values = dict(file_values or {})
        for name, value in cli_values.items():
            if name in self.rules and value is not None:
                values[name] = self.parse(name, value)
        cfg = self.cls(**{**values, **fixed})
        if self._check:
            self._check(cfg)
        return cfg

    def click_options(self, f=None, *, only: tuple[str, ...] | None = None, skip: tuple[str, ...] = ()):
        """The stage's click options, generated from the rules (help shows the real defaults)."""
        import click

        def decorate(f):
            names = [n for n in self.rules if (only is None or n in only) and n not in skip]
            for name in reversed(names):
                rule, default = self.rules[name], getattr(self.defaults, name)
                shown_default = "" if default in (None, False) or "[default" in rule.help else f"  [default: {default}]"
                allowed = rule.allowed()
                if rule.type is bool:
                    decl = self.flag(name) if rule.flag else f"{self.flag(name)}/--no-{self.flag(name)[2:]}"
                    f = click.option(decl, name, is_flag=True, default=None, help=rule.help + shown_default)(f)
                else:
                    metavar = rule.metavar or ("|".join(allowed) if allowed else
                                               {int: "INT", float: "FLOAT", str: "TEXT"}[rule.type])
                    f = click.option(self.flag(name), name, type=self._click_type(rule), metavar=metavar,
                                     help=rule.help + shown_default)(f)
            return f

        return decorate(f) if f is not None else decorate

    def _click_type(self, rule: Rule):
        import click

        if not self.click_types:
            return str
        if rule.type in (int, float):
            bounds = dict(min=rule.low, max=rule.high, min_open=rule.above)
            return click.IntRange(**bounds) if rule.type is int else click.FloatRange(**bounds)
        allowed = rule.allowed()
        return click.Choice(allowed) if allowed else str
