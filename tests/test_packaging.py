"""A non-editable install ships what mempamal needs at run time (the templates)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_templates_and_renders_them_outside_the_checkout(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("mempamal-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mempamal/templates/slurm/array.sbatch.j2" in names
    assert "mempamal/templates/slurm/submit.sh.j2" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("import mempamal.templating as t; d = t._builtin_dirs(); print(d[0]); "
             "print(t.environment().get_template('slurm/submit.sh.j2').filename)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    first, filename = out.stdout.split()
    assert first == str(site / "mempamal" / "templates")
    assert filename.startswith(str(site))
