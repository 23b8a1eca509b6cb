"""One typed settings object for every tapewatch process.

Values come, highest priority first, from keyword overrides, ``TAPEWATCH_*`` environment variables,
an optional YAML file (``TAPEWATCH_CONFIG_FILE`` or ``--config``) and the defaults below. The spec's
CONFIG and DATA_CONFIG keys keep their names (``TAPEWATCH_MIN_24H_VOLUME`` sets ``min_24h_volume``).
A bad value fails at start with a :class:`~tapewatch.errors.ConfigError` naming the key and its range; so
do a YAML file that does not parse (with its line), is not a mapping or sets a key twice, a boolean for a number,
an infinite or NaN number, and a ``TAPEWATCH_*`` environment variable that is neither a setting nor in
:data:`NON_SETTING_ENV` (a typo). A bad value from the YAML file is named by the file and its line.

The fields live in two groups, :mod:`tapewatch.settings_market` and :mod:`tapewatch.settings_ops` (mixins, in
that order: the order of the README's reference and of validation), the value types and environment names in
:mod:`tapewatch.settings_types`; this module joins them and loads them. Import from here.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from tapewatch.errors import ConfigError
from tapewatch.settings_market import MarketSettings
from tapewatch.settings_ops import OperationsSettings
from tapewatch.settings_types import (
    CONFIG_FILE_ENV,
    CONTEXT_TIMEFRAMES,
    ENV_PREFIX,
    MASK,
    NON_SETTING_ENV,
    PRIMARY_TF,
    SNAPSHOT_WEIGHTS,
    TIMEFRAME_MS,
    TIMEFRAMES,
    SnapshotLimit,
    Timeframe,
    mask_url,
)

__all__ = [
    "CONFIG_FILE_ENV",
    "CONTEXT_TIMEFRAMES",
    "ENV_PREFIX",
    "NON_SETTING_ENV",
    "PRIMARY_TF",
    "SNAPSHOT_WEIGHTS",
    "TIMEFRAMES",
    "TIMEFRAME_MS",
    "ConfigError",
    "Settings",
    "SnapshotLimit",
    "Timeframe",
    "allowed_range",
    "load_settings",
    "mask_url",
    "read_config_file",
    "shown_value",
    "unknown_env",
]


class Settings(OperationsSettings, MarketSettings, BaseSettings):
    """Every setting of tapewatch. Field descriptions double as the settings reference in the README."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        validate_default=True,
        # `inf` passes `gt=0` and no upper bound: TAPEWATCH_LARGE_TRADE_SIZE=inf would silence every signal.
        allow_inf_nan=False,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _yaml_data is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=_yaml_data))
        return tuple(sources)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic takes True as 1: `min_24h_volume: yes` in a YAML file meant a $1 minimum
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and field.annotation in (int, float):
            raise ValueError(
                "expected a number, not a boolean (YAML reads true/false, yes/no and on/off as booleans)"
            )
        return value

    @property
    def capture_dir(self) -> Path:
        return self.var_dir / "capture"

    @property
    def context_tf_ms(self) -> int:
        """Length of ``context_tf``, ms: the rolling VWAP window."""
        return TIMEFRAME_MS[self.context_tf]

    @property
    def usable_weight_per_minute(self) -> int:
        return int(self.rest_weight_limit * self.rest_weight_target)


#: The YAML file's settings while :func:`load_settings` builds a Settings (read there, so its errors are ours).
_yaml_data: dict[str, Any] | None = None


def allowed_range(name: str) -> str:
    """Human-readable allowed values of a field, e.g. ``> 0 and < 1`` or ``one of 15m, 1h``; a field whose
    validator allows less than its bounds states its rule as ``json_schema_extra={"allowed": ...}``."""
    field = Settings.model_fields[name]
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("allowed"), str):
        return str(extra["allowed"])
    bounds: list[str] = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                bounds.append(f"{sign} {bound}")
    if bounds:
        return " and ".join(bounds)
    args = getattr(field.annotation, "__args__", ())
    if args and all(isinstance(a, str | int) for a in args):
        return "one of " + ", ".join(str(a) for a in args)
    return field.description or "see the settings reference"


class _BadKey(Exception):
    """A key of the YAML file that cannot be a setting: set twice, or not a string."""


class _SettingsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key set twice in one mapping (YAML forbids it; PyYAML silently keeps the
    last) and a top-level key that is not a string (pydantic-settings failed on it with a traceback), and
    noting the line of each top-level key (lowercased, as the settings read them) for the error messages."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.key_lines: dict[str, int] = {}
        self._root: yaml.Node | None = None

    def construct_document(self, node: yaml.Node) -> Any:
        self._root = node
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        top = node is self._root
        seen: dict[Hashable, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden: not a repeat
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if top and not isinstance(key, str):
                raise _BadKey(
                    f"line {line}: key {key!r} (of type {type(key).__name__}) is not a setting name; setting names "
                    "are words like max_spread"
                )
            # top-level keys are read case-insensitively: max_spread and MAX_SPREAD are the same setting
            folded = key.lower() if top and isinstance(key, str) else key
            if not isinstance(folded, Hashable):
                continue  # the constructor below refuses it as an unhashable key
            if folded in seen:
                raise _BadKey(
                    f"line {line}: key {key!r} is set twice (also at line {seen[folded]}); set each key once"
                )
            seen[folded] = line
            if top:
                self.key_lines[str(folded)] = line
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings of a YAML file, or ConfigError naming the file, the line of a syntax error and the fix."""
    return _read_config(path)[0]


def _read_config(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The settings of a YAML file and the line of each (by lowercased key), or ConfigError (read_config_file)."""
    where = f"config file {path} (set by --config or {CONFIG_FILE_ENV})"
    if not path.exists():
        raise ConfigError(f"{where} does not exist")
    if not path.is_file():
        kind = " (a directory)" if path.is_dir() else ""
        raise ConfigError(f"{where} is not a regular file{kind}: name the YAML file itself")
    loader: _SettingsLoader | None = None
    try:
        loader = _SettingsLoader(path.read_text(encoding="utf-8"))
        data = loader.get_single_data()
    except _BadKey as exc:
        raise ConfigError(f"{where}, {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{where} is not valid YAML{at}: {problem}; fix it (one `key: value` per line, "
            "lists as [a, b]; see the settings reference in the README)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} cannot be read: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:  # an empty file (or only comments): no settings
        return {}, {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single {type(data).__name__} value"
        raise ConfigError(
            f"{where} must map setting names to values (`max_spread: 0.0003`, one per line); it holds {kind}"
        )
    return data, loader.key_lines


def _did_you_mean(key: str, known: set[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"did you mean {prefix}{close[0]}? " if close else ""


def unknown_env(environ: Mapping[str, str]) -> list[str]:
    """One line per ``TAPEWATCH_*`` variable of ``environ`` that is neither a setting nor in NON_SETTING_ENV,
    naming the closest known name when there is one."""
    known = {name.upper() for name in Settings.model_fields} | {
        name.removeprefix(ENV_PREFIX) for name in NON_SETTING_ENV
    }
    lines = []
    for name in sorted(environ):
        key = name.upper().removeprefix(ENV_PREFIX)
        if name.upper().startswith(ENV_PREFIX) and key not in known:
            # Compared without the prefix, which every name shares and which would make anything look close.
            lines.append(
                f"unknown environment variable {name}: {_did_you_mean(key, known, ENV_PREFIX)}rename or "
                "unset it (every TAPEWATCH_* variable must be a setting; see the settings reference in the README)"
            )
    return lines


def _label(key: str, overrides: Mapping[str, Any], yaml_lines: Mapping[str, int], path: object) -> str:
    """Where the value of ``key`` came from: its environment name, or the YAML file and line when it is the
    file's (keyword overrides and the environment win over the file; a default keeps the environment name)."""
    env = ENV_PREFIX + key.upper()
    from_env = any(name.upper() == env for name in os.environ)
    if key in overrides or from_env or key not in yaml_lines:
        return env
    return f"config file {path}, line {yaml_lines[key]}"


def _unknown_key_hint(key: str) -> str:
    """``did you mean …?`` for an unknown key, read as a setting name also when spelt as its environment name
    (TAPEWATCH_MAX_SPREAD in a YAML file)."""
    return _did_you_mean(key.lower().removeprefix(ENV_PREFIX.lower()), set(Settings.model_fields))


def shown_value(key: str, value: Any) -> Any:
    """``value`` of setting ``key`` as messages may show it: a secret setting's masked, a URL's password masked
    (:func:`mask_url`), anything else unchanged."""
    field = Settings.model_fields.get(key)
    annotation = field.annotation if field is not None else None
    if value and (annotation is SecretStr or SecretStr in get_args(annotation)):
        return MASK
    return mask_url(value) if isinstance(value, str) else value


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings, or raise ConfigError with one line per bad key (env name, or the YAML file and line,
    value, allowed range) and per unknown ``TAPEWATCH_*`` environment variable."""
    global _yaml_data
    # `TAPEWATCH_CONFIG_FILE=` (empty) is unset, as an empty variable means in a shell or a compose file
    path = config_file or os.environ.get(CONFIG_FILE_ENV) or None
    lines = unknown_env(os.environ)
    settings: Settings | None = None
    yaml_lines: dict[str, int] = {}
    try:
        if path is not None:
            _yaml_data, yaml_lines = _read_config(Path(path))
        settings = Settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else "?"
            if err["type"] == "extra_forbidden":
                lines.append(
                    f"unknown setting {key!r}: {_unknown_key_hint(key)}remove it (see the settings reference "
                    "in the README)"
                )
                continue
            allowed = allowed_range(key) if key in Settings.model_fields else ""
            label = _label(key, overrides, yaml_lines, path)
            shown = shown_value(key, err.get("input"))
            lines.append(f"{key} ({label}) = {shown!r}: {err['msg']}; allowed: {allowed}")
    finally:
        _yaml_data = None
    if settings is None or lines:
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines))
    return settings
