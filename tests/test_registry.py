"""The Comfy Registry's own validator (comfy-cli, in .venv-registry) accepts pyproject.toml, and
what the registry installs for users is what the README says."""
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REGISTRY_VENV = REPO / ".venv-registry" / "bin"

pytestmark = pytest.mark.skipif(not (REGISTRY_VENV / "comfy").exists(),
                                reason="comfy-cli is not installed; run `make setup`")


def validate(folder: Path, tmp_path: Path) -> tuple[int, str]:
    """`comfy node validate` as the registry's publish step runs it, offline and without a
    terminal; HOME is a temporary folder so that the tool's config files stay out of the user's."""
    env = {**os.environ, "HOME": str(tmp_path), "DO_NOT_TRACK": "1", "RUFF_NO_CACHE": "true"}
    r = subprocess.run([str(REGISTRY_VENV / "comfy"), "--skip-prompt", "node", "validate"], cwd=folder,
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def publish_fields(folder: Path) -> dict:
    """The fields `comfy node publish` refuses to publish without, as comfy-cli parses them."""
    code = ("import json, sys; from comfy_cli.registry.config_parser import extract_node_configuration as e; "
            "c = e(sys.argv[1]); print(json.dumps({'publisher': c.tool_comfy.publisher_id, "
            "'name': c.project.name, 'repository': c.project.urls.repository, 'version': c.project.version}))")
    out = subprocess.run([str(REGISTRY_VENV / "python"), "-c", code, str(folder / "pyproject.toml")],
                         env={**os.environ, "HOME": "/tmp"}, capture_output=True, text=True, check=True)
    import json
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_registry_validator_accepts_the_pack(tmp_path):
    code, out = validate(REPO, tmp_path)
    assert code == 0, out
    for problem in ("Warning", "Security warnings found", "Error"):
        assert problem not in out, out
    assert "All validation checks passed" in out
    fields = publish_fields(REPO)
    assert all(fields.values()), fields


def test_registry_validator_refuses_a_broken_pyproject(tmp_path):
    """The check above can fail: the same validator on a copy without a version."""
    broken = tmp_path / "pack"
    broken.mkdir()
    text = (REPO / "pyproject.toml").read_text()
    (broken / "pyproject.toml").write_text(re.sub(r'(?m)^version = ".*"$', 'version = ""', text))
    code, out = validate(broken, tmp_path)
    assert code != 0, out


def test_readme_install_matches_what_the_registry_installs():
    """The registry and ComfyUI-Manager install a pack's requirements.txt; pyproject's dependencies
    are metadata only. Both must list the same packages, and the README's manual install must be
    the same command."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert sorted(r for r in reqs if r) == sorted(project["dependencies"])
    readme = (REPO / "README.md").read_text()
    install = readme[readme.index("## Install in ComfyUI"):]
    install = install[:install.index("\n## ", 3)]
    commands = install[install.index("```bash"):install.index("```", install.index("```bash") + 3)]
    pips = [line.strip() for line in commands.splitlines() if "pip install" in line]
    assert pips == ["pip install -r comfyui-freeswim/requirements.txt"], pips
    assert "Comfy Registry" in install
    assert not any(name in "".join(reqs) for name in ("torch", "diffusers", "pytest"))
