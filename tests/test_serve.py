"""`make serve` (bin/serve) refuses to start in production mode without what production needs."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS")


def serve(tmp_path, **env: str | None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHON": sys.executable, "PORT": "0"}
    # Never the developer's or CI's database: a throwaway file, should anything get that far.
    environment["DATABASE_URL"] = f"sqlite:///{tmp_path / 'serve.sqlite3'}"
    for name, value in env.items():
        if value is None:
            environment.pop(name, None)
        else:
            environment[name] = value
    return subprocess.run(
        [str(ROOT / "bin" / "serve")], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("missing", [REQUIRED, *[(name,) for name in REQUIRED]])
def test_refuses_without_the_required_settings_and_says_which(tmp_path, missing):
    result = serve(tmp_path, **dict.fromkeys(missing))
    assert result.returncode == 2
    assert result.stderr.startswith("Not starting: production mode needs these settings")
    for name in REQUIRED:
        assert (f"  - {name}:" in result.stderr) is (name in missing)
    assert "Deploying" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "serve.sqlite3").exists()  # nothing ran


def test_refuses_debug_mode(tmp_path):
    result = serve(tmp_path, DJANGO_DEBUG="1")
    assert result.returncode == 2
    assert "runs with debug off" in result.stderr


def test_refuses_when_the_deploy_check_warns(tmp_path):
    # Plain HTTP in production: check --deploy warns about redirects and cookies.
    result = serve(tmp_path, DJANGO_HTTPS="0", DJANGO_DEBUG=None)
    assert result.returncode == 1
    assert "security.W008" in result.stderr + result.stdout
    assert "check --deploy found problems" in result.stderr
    assert "Applying" not in result.stdout  # it stopped before migrating


def test_gunicorn_runs_threaded_workers_counted_from_the_environment(monkeypatch):
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("GUNICORN_THREADS", "5")
    conf = runpy.run_path(str(ROOT / "dashboard" / "gunicorn_conf.py"))
    assert (conf["worker_class"], conf["workers"], conf["threads"]) == ("gthread", 3, 5)
    assert conf["timeout"] >= 60


def test_gunicorn_refuses_a_bad_count_readably(monkeypatch):
    monkeypatch.setenv("GUNICORN_THREADS", "lots")
    with pytest.raises(SystemExit, match="GUNICORN_THREADS must be a whole number"):
        runpy.run_path(str(ROOT / "dashboard" / "gunicorn_conf.py"))
