"""``pip install .``: the package, its configs (installed as ``recstudio_edge/configs``) and the
``recstudio-edge`` console command, checked by installing a copy of the checkout into a folder
(``--no-deps --no-build-isolation``: no network, the build tools of this environment) and using it
from outside the repository. The runtime distribution (``runtime/``) is tested in
``tests/edge/test_runtime_wheel.py``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what the two distributions are built from (a copy, so that build/ and *.egg-info never land in the checkout)
SOURCES = ("pyproject.toml", "setup.py", "README.md", "requirements.txt", "run.py", "configs", "recstudio_edge", "runtime")


def copy_checkout(dest: Path, names=SOURCES) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "--no-build-isolation", "-q"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def outside(code: str, path: Path, cwd: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run ``code`` with only ``path`` (and the standard library, site-packages) importable, from ``cwd``."""
    env = {"PYTHONPATH": str(path), "OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def normalise(req: str) -> str:
    """A requirement as wheel metadata writes it: no spaces, several specifiers in sorted order."""
    from packaging.requirements import Requirement

    r = Requirement(req)
    return r.name + ",".join(sorted(str(s) for s in r.specifier)) if len(r.specifier) > 1 else req.replace(" ", "")


def test_pip_install_gives_the_package_its_configs_and_the_console_command(tmp_path):
    src = copy_checkout(tmp_path / "src", [n for n in SOURCES if n != "runtime"])
    target = tmp_path / "site"
    pip("install", "--target", str(target), str(src), cwd=tmp_path)
    pkg = target / "recstudio_edge"
    # the configs travel with the package: base.yaml and every model and data config of the checkout
    conf = pkg / "configs"
    assert (conf / "base.yaml").read_bytes() == (ROOT / "configs" / "base.yaml").read_bytes()
    for folder in ("model", "data"):
        assert sorted(p.name for p in (conf / folder).glob("*.yaml")) == \
            sorted(p.name for p in (ROOT / "configs" / folder).glob("*.yaml")), folder
    assert (pkg / "tune" / "bind_host.js").is_file()
    # the console command is declared and points at the CLI's entry
    dist = next(target.glob("recstudio_edge-*.dist-info"))
    eps = (dist / "entry_points.txt").read_text()
    assert "[console_scripts]" in eps and "recstudio-edge = recstudio_edge.cli:entry" in eps
    meta = (dist / "METADATA").read_text()
    requires = [ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    req = [ln.split("#")[0].strip() for ln in (src / "requirements.txt").read_text().splitlines()]
    assert [r.replace(" ", "") for r in requires] == [normalise(r) for r in req if r]  # requirements.txt, in order
    assert "torch==2.13.0" in requires
    # imported from outside the checkout, the installed package reads its own configs
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = ("import json, recstudio_edge, recstudio_edge.config as c; from recstudio_edge.config import build_config;"
            "print(json.dumps({'dir': str(c.CONFIG_DIR), 'path': list(recstudio_edge.__path__),"
            " 'models': sorted(p.stem for p in (c.CONFIG_DIR / 'model').glob('*.yaml')),"
            " 'trial': __import__('recstudio_edge.tune.experiment', fromlist=['x']).RUN_ENTRY}))")
    proc = outside(code, target, work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(res["dir"]) == conf.resolve() and res["path"] == [str(pkg)]
    assert "BPR" in res["models"] and "PINRec" in res["models"]
    # NNI trials of an installed package run the CLI's entry (there is no run.py beside it)
    assert res["trial"] == ["-c", "from recstudio_edge.cli import main; main()"]


def test_config_dir_of_a_checkout_is_the_repository_configs():
    from recstudio_edge import config

    assert config.CONFIG_DIR == ROOT / "configs" and (config.CONFIG_DIR / "base.yaml").is_file()


def test_console_entry_runs_main_as_run_py_does(monkeypatch):
    """``python run.py`` calls ``main()`` and drops its result; the console command must too, not pass the
    result dict to ``sys.exit`` (which would print it and exit 1)."""
    from recstudio_edge import cli

    seen = []
    monkeypatch.setattr(cli, "main", lambda argv=None: seen.append(argv) or {"test": {"recall@10": 0.1}})
    assert cli.entry() is None and seen == [None]
    text = (ROOT / "run.py").read_text()
    assert "from recstudio_edge.cli import main" in text and len(text.strip().splitlines()) == 5


def test_pyproject_takes_its_dependencies_from_requirements_txt():
    import tomllib

    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert proj["project"]["dynamic"] == ["dependencies"] and "dependencies" not in proj["project"]
    assert proj["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}
    assert proj["project"]["scripts"] == {"recstudio-edge": "recstudio_edge.cli:entry"}
