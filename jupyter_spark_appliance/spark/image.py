"""Build the project's image (one per role: spark-master, spark-worker, livy, spark-connect, sparkmagic).

No registry is needed: the base is a build argument (a public Debian image
where a registry is reachable, or the debootstrapped local one), and Python
packages come from wheels built on the host (pip's cache makes pyspark's
456 MB wheel a one-time cost), so the build itself only reaches Debian's
mirror for the JRE and Python.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path

from .. import __version__
from ..backends.docker import docker_sdk
from .roles import ROLES

DEFAULT_BASE = "jupyter-spark-appliance-base:bookworm"


def project_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def build_context(ctx: Path, log: Callable[[str], None]) -> None:
    wheels = ctx / "wheels"
    wheels.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(wheels)]
    log(f"collecting wheels: pyspark {version('pyspark')}, tornado, psutil, py4j")
    subprocess.run(pip + [f"pyspark=={version('pyspark')}", "tornado", "psutil"], check=True)
    # The sparkmagic target's own packages, in a dir of their own: the other targets never copy them.
    notebook = [_pinned("sparkmagic", ">=0.23"), _pinned("jupyter_server", ">=2.10,<3")]
    log(f"collecting the notebook's wheels: {', '.join(notebook)} and their dependencies")
    notebook_wheels(pip[:-1], ctx / "notebook-wheels", notebook, log)
    root = project_root()
    log(f"building the jupyter-spark-appliance wheel from {root or 'PyPI'}")
    subprocess.run(pip + ["--no-deps", str(root) if root else f"jupyter-spark-appliance=={__version__}"], check=True)
    shutil.copy(files("jupyter_spark_appliance").joinpath("spark/images/Dockerfile"), ctx / "Dockerfile")


#: The image's Python (Debian bookworm's python3): pip on the host resolves for its own, which may be newer.
IMAGE_PYTHON = "3.11.2"


def notebook_wheels(pip: list[str], out: Path, requirements: list[str], log: Callable[[str], None],
                    image_python: str = IMAGE_PYTHON, rounds: int = 12) -> None:
    """The wheels of ``requirements`` and their dependencies, every one installable on the image's Python.

    ``pip wheel`` cannot resolve for another interpreter, and a dependency's
    newest release may require a newer Python than Debian's (soupsieve needs
    3.11.5): the minor series of each such release and later ones are excluded
    and the resolution done again.
    """
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    excluded: list[str] = []
    for _ in range(rounds):
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([*pip, str(out), *requirements, *excluded], check=True)
        bad = []
        for wheel in sorted(out.glob("*.whl")):
            requires = _requires_python(wheel)
            if requires and Version(image_python) not in SpecifierSet(requires):
                name, release = wheel.name.split("-")[:2]
                # Its whole minor series and what follows (later releases rarely lower their Requires-Python).
                series = ".".join(str(n) for n in Version(release).release[:2])
                bad.append(f"{name}<{series}")
        if not bad:
            return
        log(f"excluding what Python {image_python} cannot install: {', '.join(bad)}")
        excluded += bad
    raise RuntimeError(f"no set of the notebook's wheels installs on Python {image_python} (excluded {excluded})")


def _requires_python(wheel: Path) -> str:
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode("utf-8", "replace").splitlines():
            if line.startswith("Requires-Python:"):
                return line.split(":", 1)[1].strip()
            if not line:
                break
    return ""


def _pinned(name: str, otherwise: str) -> str:
    """The host's version of ``name`` (what the tests ran with), or the project's range when it has none."""
    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        return f"{name}{otherwise}"


def context_digest(ctx: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(ctx.rglob("*")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes() if path.stat().st_size < 10_000_000 else str(path.stat().st_size).encode())
    return h.hexdigest()[:16]


def build_images(base: str = DEFAULT_BASE, log: Callable[[str], None] = print, client=None) -> dict[str, str]:  # noqa: ANN001
    """Build (or reuse, when the inputs did not change) the role images."""
    docker = docker_sdk()

    client = client or docker.from_env()
    with tempfile.TemporaryDirectory(prefix="jsa-image-") as tmp:
        ctx = Path(tmp)
        build_context(ctx, log)
        digest = context_digest(ctx) + "-" + hashlib.sha256(base.encode()).hexdigest()[:8]
        built = {}
        for role, tag in ((r.name, r.image) for r in ROLES.values()):
            previous = None
            try:
                previous = client.images.get(tag)
                if previous.labels.get("jupyter-spark-appliance.inputs") == digest:
                    log(f"{tag} is up to date")
                    built[role] = tag
                    continue
            except docker.errors.ImageNotFound:
                pass
            log(f"building {tag} (target {role}, base {base})")
            for chunk in client.api.build(path=str(ctx), tag=tag, target=role, buildargs={"BASE": base},
                                          labels={"jupyter-spark-appliance.inputs": digest}, decode=True, rm=True):
                if "stream" in chunk and chunk["stream"].strip():
                    log(chunk["stream"].rstrip())
                if "error" in chunk:
                    raise RuntimeError(chunk["error"])
            built[role] = tag
            if previous is not None:
                _remove_replaced(client, previous.id, tag, log)
        return built


def _remove_replaced(client, image_id: str, tag: str, log: Callable[[str], None]) -> None:  # noqa: ANN001
    """Drop the image a rebuild replaced, so rebuilds do not pile up untagged images of ~1.7 GB each.

    Only when nothing else tags it; one that a container still uses stays (Docker refuses).
    """
    docker = docker_sdk()

    try:
        if client.images.get(image_id).tags:
            return
        client.images.remove(image_id, noprune=False)
        log(f"removed the previous {tag} ({image_id[7:19]})")
    except docker.errors.APIError:
        pass


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="jupyter spark-appliance build-image", description=__doc__)
    p.add_argument("--base", default=DEFAULT_BASE,
                   help=f"base image (default {DEFAULT_BASE}, made by images/build-base.sh; "
                        "debian:bookworm-slim where a registry is reachable)")
    args = p.parse_args(argv)
    for role, tag in build_images(args.base).items():
        print(f"{role}: {tag}")


if __name__ == "__main__":
    main()
