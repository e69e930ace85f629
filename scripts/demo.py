"""The demo: a local registry, the base image, a fixture app built by hatch, and its run."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.conftest import copy_project  # noqa: E402
from tests.support.base_image import push_base_image  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402
from tests.support.runner import run_image, unpack_image  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tar", action="store_true", help="write a tar instead of pushing")
    parser.add_argument("--keep", action="store_true", help="keep the registry running")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hatch-jib-demo-"))
    registry = start_registry(work / "registry", "open")
    print(f"==> registry on {registry.host} (serves the base image)", flush=True)
    try:
        print("==> base image: Debian bookworm + python3 (debootstrap; cached after the first run)")
        base = push_base_image(registry.host)
        project = copy_project("hello-cli", work)
        env = {**os.environ, "JIB_FROM_IMAGE": base, "JIB_CACHE_DIR": str(work / "cache")}
        if not args.tar:
            env["JIB_TO_IMAGE"] = f"{registry.host}/demo/hello-cli"

        print(f"==> hatch build -t jib in {project}", flush=True)
        subprocess.run(["hatch", "build", "-t", "jib"], cwd=project, env=env, check=True)

        source = (
            f"docker-archive:{project / 'dist' / 'hello-cli-0.1.0.image.tar'}"
            if args.tar
            else f"docker://{env['JIB_TO_IMAGE']}:0.1.0"
        )
        print(f"==> running {source} under chroot", flush=True)
        result = run_image(unpack_image(source, work / "run"), ["--name", "demo"])
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.returncode
    finally:
        if args.keep:
            pid = registry.process.pid if registry.process else "?"
            print(f"registry left running on {registry.host}; work dir {work}")
            print(f"to stop it: kill {pid} && rm -rf {work}")
        else:
            registry.stop()
            # The registry's storage, the cache and the unpacked image: a few hundred MB.
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
