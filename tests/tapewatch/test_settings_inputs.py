"""Settings values that crashed later or were silently wrong are refused at start, naming the key, the value
and what is allowed: URLs whose port or Redis database is not a number, YAML keys that cannot be settings,
booleans for numbers, empty environment values; and a bad YAML value is labelled with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapewatch.adapters.notifiers import notifiers_from_settings
from tapewatch.cli import main
from tapewatch.errors import ConfigError
from tapewatch.settings import load_settings, mask_url


def _yaml(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "tapewatch.yaml"
    cfg.write_text(text)
    return cfg


# --- URLs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "url", "expected"),
    [
        # the drivers failed at the first connection: `invalid literal for int()`, `Port could not be cast`
        ("database_url", "postgresql+psycopg://postgres@127.0.0.1:notaport/test", "must be a number from 0 to 65535"),
        ("redis_url", "redis://127.0.0.1:notaport/0", "must be a number from 0 to 65535"),
        ("redis_url", "redis://127.0.0.1:70000/0", "must be a number from 0 to 65535"),
        # redis-py ignored the path and used database 0
        ("redis_url", "redis://127.0.0.1:6379/abc", "must be empty or a database number, like redis://host:6379/0; got 'abc'"),
        ("redis_url", "unix:///tmp/redis.sock?db=abc", "must be a database number, like ?db=0; got 'abc'"),
    ],
)  # fmt: skip
def test_a_url_whose_port_or_database_is_not_a_number_is_refused(
    key: str, url: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = "TAPEWATCH_" + key.upper()
    monkeypatch.setenv(env, url)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert f"{key} ({env}) = {url!r}: Value error, " in str(err.value)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/3",
        "rediss://h",
        "redis://h:6379/",
        "unix:///tmp/r.sock?db=0",
        "redis://h/0/",  # redis-py drops the slashes: database 0
        "redis://h/%31",  # and unquotes: database 1
    ],
)
def test_redis_urls_redis_py_reads_as_written_are_accepted(url: str) -> None:
    assert load_settings(redis_url=url).redis_url == url


def test_the_cli_reports_a_bad_database_port_as_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TAPEWATCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:notaport/test")
    assert main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tapewatch: configuration error: invalid settings:")
    assert "database_url (TAPEWATCH_DATABASE_URL)" in err and "Traceback" not in err


# --- YAML keys ---------------------------------------------------------------------------------------------


def test_a_yaml_key_that_is_not_a_string_is_refused_by_name(tmp_path: Path) -> None:
    cfg = _yaml(
        tmp_path, "max_spread: 0.001\n1: 2\n"
    )  # pydantic-settings: 'int' object has no attribute 'lower'
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert str(err.value) == (
        f"config file {cfg} (set by --config or TAPEWATCH_CONFIG_FILE), line 2: key 1 (of type int) is not a "
        "setting name; setting names are words like max_spread"
    )


def test_a_yaml_key_spelt_as_the_environment_variable_gets_the_setting_name(tmp_path: Path) -> None:
    cfg = _yaml(tmp_path, "TAPEWATCH_MAX_SPREAD: 0.001\n")
    with pytest.raises(
        ConfigError, match="unknown setting 'TAPEWATCH_MAX_SPREAD': did you mean max_spread\\? remove it"
    ):
        load_settings(cfg)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("max_spread: 0.001\nmin_large_trades: 4\nmax_spread: 0.002\n", "'max_spread'"),
        # the settings read keys case-insensitively: the same setting twice
        ("max_spread: 0.001\nmin_large_trades: 4\nMAX_SPREAD: 0.002\n", "'MAX_SPREAD'"),
    ],
)
def test_a_yaml_key_set_twice_is_refused(tmp_path: Path, text: str, key: str) -> None:
    cfg = _yaml(tmp_path, text)  # PyYAML kept the last one, silently
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert str(err.value).endswith(f", line 3: key {key} is set twice (also at line 1); set each key once")
    assert str(err.value).startswith(f"config file {cfg} ")


def test_a_directory_as_the_config_file_is_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path)  # said "does not exist"
    assert str(err.value) == (
        f"config file {tmp_path} (set by --config or TAPEWATCH_CONFIG_FILE) is not a regular file (a directory): "
        "name the YAML file itself"
    )


# --- YAML values ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("min_24h_volume: yes\n", "min_24h_volume (config file {cfg}, line 2) = True: Value error, expected a "
         "number, not a boolean (YAML reads true/false, yes/no and on/off as booleans); allowed: >= 0"),
        ("min_large_trades: true\n", "min_large_trades (config file {cfg}, line 2) = True: Value error, expected "
         "a number, not a boolean"),
    ],
)  # fmt: skip
def test_a_boolean_is_not_a_number(tmp_path: Path, text: str, expected: str) -> None:
    cfg = _yaml(tmp_path, "capture_enabled: no\n" + text)  # was 1.0 (a $1 minimum) and 1
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert expected.format(cfg=cfg) in str(err.value)
    assert "capture_enabled" not in str(err.value)  # a boolean setting still takes yes/no
    assert load_settings(_yaml(tmp_path, "capture_enabled: no\n")).capture_enabled is False


def test_a_bad_yaml_value_is_labelled_with_the_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _yaml(tmp_path, "# tuned\nmin_large_trades: 4\nmax_spread: 2\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert f"max_spread (config file {cfg}, line 3) = 2: Input should be less than 1" in str(err.value)
    assert "TAPEWATCH_MAX_SPREAD" not in str(err.value)
    monkeypatch.setenv("TAPEWATCH_MAX_SPREAD", "3")  # the environment wins: its value is the one refused
    with pytest.raises(ConfigError, match="max_spread \\(TAPEWATCH_MAX_SPREAD\\) = '3'"):
        load_settings(cfg)


# --- empty environment values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # Path("") is ".": `run` wrote ./capture into the current directory
        ("var_dir", "Value error, must name a directory, like var or /srv/tapewatch; got an empty value"),
        ("sim_host", "String should have at least 1 character"),  # the simulator listened on every interface
        ("dagster_host", "String should have at least 1 character"),  # http://:3000
    ],
)
def test_an_empty_path_or_host_is_refused(key: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = "TAPEWATCH_" + key.upper()
    monkeypatch.setenv(env, "")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert f"{key} ({env}) = '': {expected}; allowed: " in str(err.value)


def test_an_empty_config_file_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPEWATCH_CONFIG_FILE", "")  # said "config file . does not exist"
    assert load_settings().max_spread == 0.0002  # the defaults


def test_an_empty_telegram_token_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # the pair check read it as unset, the notifiers as set: the service failed at start (ValueError)
    monkeypatch.setenv("TAPEWATCH_TELEGRAM_BOT_TOKEN", "")
    monkeypatch.setenv("TAPEWATCH_WEBHOOK_SECRET", "")
    settings = load_settings()
    assert settings.telegram_bot_token is None and settings.webhook_secret is None
    assert notifiers_from_settings(settings) == []


@pytest.mark.parametrize("key", ["database_url", "redis_url", "webhook_url"])
def test_an_empty_url_variable_is_unset(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`TAPEWATCH_DATABASE_URL=` in a shell or a compose file means "not set" (the embedded server, or off)."""
    monkeypatch.setenv("TAPEWATCH_" + key.upper(), "")
    assert getattr(load_settings(), key) is None


def test_a_numeric_telegram_chat_id_in_yaml_is_taken(tmp_path: Path) -> None:
    """A group's chat id is a negative number, and YAML reads it as one: it was refused as not a string."""
    cfg = _yaml(tmp_path, "telegram_bot_token: '123:abc'\ntelegram_chat_id: -1001234567890\n")
    assert load_settings(cfg).telegram_chat_id == "-1001234567890"


def test_a_dashboard_user_with_a_colon_is_refused() -> None:
    """Basic auth separates the user from the password with ':': nobody could log in as ``a:b`` (and the
    dashboard's own warm-up request failed at start with a traceback)."""
    with pytest.raises(ConfigError, match="dashboard_user"):
        load_settings(dashboard_user="a:b")


def test_a_symbol_with_a_space_inside_is_refused_as_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run --symbols "BTC USDT"` is refused; the same in TAPEWATCH_SYMBOLS became BTCUSDT silently."""
    monkeypatch.setenv("TAPEWATCH_SYMBOLS", "BTC USDT")
    with pytest.raises(ConfigError, match="symbols must be letters and digits"):
        load_settings()
    monkeypatch.setenv("TAPEWATCH_SYMBOLS", " btcusdt , ETHUSDT ")
    assert load_settings().symbols == ("BTCUSDT", "ETHUSDT")


# --- secrets in messages, hosts of spaces -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "url", "shown"),
    [
        ("database_url", "postgresql+psycopg://u:s3cret@h:99999/db", "postgresql+psycopg://u:***@h:99999/db"),
        ("database_url", "mysql://u:s3cret@h/db", "mysql://u:***@h/db"),
        ("database_url", "postgresql://u:s3cret@h:notaport/db", "postgresql://u:***@h:notaport/db"),
        # a / in the password: urllib reads "s3" as the port, SQLAlchemy reads the whole password
        ("database_url", "postgresql://u:s3cret/x@h/db", "postgresql://u:***@h/db"),
        ("database_url", "postgresql://u:s3cret@[::1/db", "postgresql://u:***@[::1/db"),
        ("database_url", "postgresql://u@h:99999/db?password=s3cret", "postgresql://u@h:99999/db?password=***"),
        ("redis_url", "redis://:s3cret@h/abc", "redis://:***@h/abc"),
        ("redis_url", "redis://default:s3cret@h:6379/?db=x", "redis://default:***@h:6379/?db=x"),
        ("webhook_url", "ftp://u:s3cret@h/hook", "ftp://u:***@h/hook"),
    ],
)  # fmt: skip
def test_a_refused_url_is_shown_without_its_password(
    key: str, url: str, shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the whole URL went to the console and the logs, password included, twice (the input and the message)
    monkeypatch.setenv("TAPEWATCH_" + key.upper(), url)
    monkeypatch.setenv("TAPEWATCH_WEBHOOK_SECRET", "k")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "s3cret" not in message
    assert f"{key} (TAPEWATCH_{key.upper()}) = {shown!r}: Value error, " in message


def test_a_refused_secret_setting_is_not_shown(tmp_path: Path) -> None:
    cfg = _yaml(tmp_path, "telegram_bot_token: [123:s3cret]\ntelegram_chat_id: 1\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert "s3cret" not in str(err.value) and "telegram_bot_token (config file" in str(err.value)
    assert "= '***': " in str(err.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:s3cret@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),  # an @ in the password
        ("postgresql://u:a\nb@h/db", "postgresql://u:***@h/db"),
        ("redis://u:s3cret@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
        ("postgresql:///db?host=/tmp&sslpassword=s3cret&user=u", "postgresql:///db?host=/tmp&sslpassword=***&user=u"),
        ("https://hooks.example/x?token=s3cret&a=1", "https://hooks.example/x?token=***&a=1"),
        # nothing secret: unchanged, an @ in the path included
        ("https://h:8080/x@y", "https://h:8080/x@y"),
        ("redis://user@h:6379/0", "redis://user@h:6379/0"),
        ("not a url", "not a url"),
    ],
)  # fmt: skip
def test_mask_url_hides_passwords_and_nothing_else(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize("key", ["dashboard_host", "sim_host", "dagster_host"])
@pytest.mark.parametrize(
    ("value", "why"), [("  ", "got only spaces"), ("my host", "got 'my host', with a space")]
)
def test_a_host_of_spaces_is_refused_naming_the_key(
    key: str, value: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TAPEWATCH_SIM_HOST="  " was taken; the server failed later, at the socket ("Name or service not known")
    env = "TAPEWATCH_" + key.upper()
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert f"{key} ({env}) = {value!r}: Value error, must name a host without spaces" in str(err.value)
    assert why in str(err.value)
    for good in ("::1", "0.0.0.0", "localhost"):  # every real host still passes
        monkeypatch.setenv(env, good)
        assert getattr(load_settings(), key) == good


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("database_url", "postgresql+psycopg://u:s3cret@   :5432/db"),
        ("redis_url", "redis://   :6379/0"),
        ("webhook_url", "https://  /hook"),
        ("telegram_api_url", "https://api telegram.org"),
        ("binance_rest_url", "https:// /"),
        ("binance_ws_market_url", "wss://  :443/market"),
    ],
)
def test_a_url_whose_host_is_spaces_is_refused_naming_the_key(
    key: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = "TAPEWATCH_" + key.upper()
    monkeypatch.setenv(env, url)
    monkeypatch.setenv("TAPEWATCH_WEBHOOK_SECRET", "k")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert f"{key} ({env}) = " in message and "must be a name or address without spaces" in message
    assert "s3cret" not in message
    # a URL with no host at all (PostgreSQL on a unix socket) or an IPv6 one still passes
    monkeypatch.delenv(env)
    ok = {"database_url": "postgresql:///db?host=/tmp", "redis_url": "redis://[::1]:6379/0"}
    assert load_settings(**ok).database_url == ok["database_url"]
