"""Settings come from the environment and a wrong value stops start-up, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings

from config.env import Env, EnvError


def test_parsers_accept_good_values() -> None:
    env = Env({"A": "on", "B": "0", "N": " 42 ", "L": "a,b", "U": "postgres://u@h:5432/db", "C": "INFO"})
    assert env.bool("A", False) is True and env.bool("B", True) is False
    assert env.int("N", 0, minimum=1) == 42
    assert env.list("L", []) == ["a", "b"]
    assert env.url("U", ("postgres",)) == "postgres://u@h:5432/db"
    assert env.choice("C", "DEBUG", ("DEBUG", "INFO")) == "INFO"
    assert env.str("MISSING", "fallback") == "fallback"


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda env: env.bool("FLAG", False), "FLAG='maybe' is not a boolean"),
        (lambda env: env.int("FLAG", 1), "FLAG='maybe' is not a whole number"),
        (lambda env: env.url("FLAG", ("redis",)), "FLAG must start with one of redis://"),
        (lambda env: env.choice("FLAG", "a", ("a", "b")), "FLAG='maybe' is not one of: a, b"),
        (lambda env: env.str("OTHER", required=True), "OTHER must be set"),
    ],
)
def test_parsers_name_the_variable_on_bad_values(call, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EnvError) as raised:
        call(Env({"FLAG": "maybe"}))
    assert fragment in str(raised.value)


def test_int_bounds_and_empty_list_items() -> None:
    with pytest.raises(EnvError, match="N=0 is below the minimum of 1"):
        Env({"N": "0"}).int("N", 5, minimum=1)
    with pytest.raises(EnvError, match="L='a,,b' has an empty item"):
        Env({"L": "a,,b"}).list("L", [])


def _start(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"SWITCHBOARD_NO_BOOTSTRAP": "1", **extra_env})
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("extra_env", "message"),
    [
        ({"SWITCHBOARD_DEBUG": "maybe"}, "SWITCHBOARD_DEBUG='maybe' is not a boolean"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL must start with one of postgres://"),
        ({"REDIS_URL": "http://localhost"}, "REDIS_URL must start with one of redis://"),
        ({"SWITCHBOARD_MAX_BODY_BYTES": "ten"}, "SWITCHBOARD_MAX_BODY_BYTES='ten' is not a whole number"),
        ({"SWITCHBOARD_HTTPS": "perhaps"}, "SWITCHBOARD_HTTPS='perhaps' is not a boolean"),
        ({"SWITCHBOARD_OUTBOUND_ALLOWED_HOSTS": "10.0.0.0/8,not a host!"}, "'not a host!' is not a host name"),
    ],
)
def test_a_wrong_value_stops_start_up(extra_env: dict[str, str], message: str) -> None:
    result = _start(extra_env)
    assert result.returncode != 0
    assert message in result.stderr


def test_good_environment_starts() -> None:
    result = _start({})
    assert result.returncode == 0, result.stderr
