"""One name in Python (issue 17, item 9): the distribution installs only ``polycert`` and gives its public API.

The wheel is built from the checkout as ``pip install`` would build it, and its file list read: nothing may
land in site-packages beside ``polycert/`` and its ``.dist-info``, where a top-level ``service`` or
``workers`` would collide with another project's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import polycert

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # a copy of the sources: setuptools writes its build/ folder beside them, which must not be the checkout
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("service", "formulations", "workers", "migrations"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)]
    built = subprocess.run(command[:4] + ["--no-build-isolation"] + command[4:], capture_output=True, text=True,
                           timeout=300)
    if built.returncode != 0:  # no setuptools in this environment's own packages: let pip fetch it
        built = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("polycert-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_holds_one_top_level_package_with_its_data(wheel):
    names = wheel.namelist()
    tops = {name.split("/")[0] for name in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"polycert"}, sorted(tops)
    for expected in ("polycert/__init__.py", "polycert/cli.py", "polycert/api/app.py",
                     "polycert/formulations/cascade.py", "polycert/formulations/backends/__init__.py",
                     "polycert/workers/tasks.py", "polycert/migrations/env.py", "polycert/migrations/alembic.ini",
                     "polycert/migrations/versions/0001_create_certificate_store.py",
                     "polycert/assets/polycert_tiny_gelu.npz", "polycert/assets/mnist7_area.npz"):
        assert expected in names, expected
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    assert "polycert = polycert.cli:main" in wheel.read(entry_points).decode()


def test_import_polycert_gives_the_public_api_and_the_engine_alone_pulls_in_no_web_service(tmp_path):
    # a fresh process outside the checkout: what a user's script sees
    script = """
import json, sys
import polycert
net = polycert.load_builtin("polycert-tiny")
x, y = polycert.load_mnist7("test")
one = polycert.certify(net, x[0], int(y[0]), eps=0.01, method="mip")
batch = polycert.certify_batch(net, x[:3], y[:3], 0.01, method="mip", settings=polycert.CascadeSettings(answer="bounds"))
web = sorted(m for m in ("fastapi", "celery", "sqlalchemy", "polycert.api") if m in sys.modules)
try:
    import service
    stray = True
except ModuleNotFoundError:
    stray = False
print(json.dumps(dict(version=polycert.__version__, one=[one.verdict.value, one.lower, one.upper],
                      batch0=[batch[0].verdict.value, batch[0].lower, batch[0].upper], web=web, stray=stray,
                      names=sorted(polycert.__all__))))
"""
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["version"] == polycert.__version__
    assert out["web"] == [] and out["stray"] is False
    # one query, certified alone and in a batch, gets the same verdict and the same exact bracket
    assert out["one"][0] == out["batch0"][0]
    assert abs(out["one"][1] - out["batch0"][1]) <= 1e-4 + 1e-6 and abs(out["one"][2] - out["batch0"][2]) <= 1e-4 + 1e-6
    for name in ("certify", "certify_batch", "load_network", "load_onnx", "read_vnnlib", "Client", "ApiError"):
        assert name in out["names"]


def test_every_public_name_resolves():
    for name in polycert.__all__:
        assert getattr(polycert, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        polycert.nope  # noqa: B018


def test_python_dash_m_polycert_is_the_command_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "polycert", "--version"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == f"polycert {polycert.__version__}", run.stdout + run.stderr
