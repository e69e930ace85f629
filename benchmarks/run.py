"""Benchmarks: hatch-jib builds beside skopeo, `tar | gzip | sha256sum` and buildah, one table.

Run as root from the repository root, after `scripts/setup`:

    python benchmarks/run.py                 # everything (downloads numpy, pandas, pyarrow)
    python benchmarks/run.py --quick         # no heavy dependencies, layers up to 100 MB
    python benchmarks/run.py --only push     # one group of cases (repeatable flag)

Each case runs `--repeat` times (default 3), ours and the peer alternating, and the table
shows the median of each, so one slow moment on a noisy machine does not set a ratio. Trees
are deleted only at the end, so that one case's cleanup cannot slow the next one's file
creation (on the machine of the README, creating files right after a large delete was at
times several times slower).

Every build is `python -m hatch_jib build` in a child process, so wall time and peak memory
(the child's max RSS) are what a user would see. Bytes uploaded are what the registry stores
after the push, counted in its storage directory. Ratios are the result; absolute times only
describe this machine.
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

REPO_ROOT = Path(__file__).resolve().parents[1]
# The measured child modes live apart, so that they import nothing of this harness.
CHILD = Path(__file__).with_name("child.py")
sys.path.insert(0, str(REPO_ROOT))

from child import IN_PROCESS  # noqa: E402  (beside this script, so on the path already)

if TYPE_CHECKING:
    from tests.support.registry import RunningRegistry

HEAVY_DEPENDENCIES = ["numpy", "pandas", "pyarrow"]
MANY_FILES = 10_000
GROUPS = ("incremental", "push", "layer", "buildah", "memory")
# The interpreter of the measured hatch-jib children: a clean environment unless
# --system-python (see `clean_environment`).
PYTHON = [sys.executable]


@dataclass(frozen=True)
class Run:
    """One measured child process."""

    seconds: float
    peak_mb: float
    uploaded: int = 0
    in_process: float | None = None  # what the child says its own work took


@dataclass(frozen=True)
class Row:
    case: str
    ours: Run
    reference: str = ""
    theirs: Run | None = None
    goal: str = ""

    def ratio(self) -> str:
        if self.theirs is None:
            return ""
        return f"{self.ours.seconds / self.theirs.seconds:.2f}"


def measure(command: Sequence[str], *, env: dict[str, str] | None = None, shell=False) -> Run:
    """Run `command`, failing loudly; its wall time and the child's own peak RSS."""
    with tempfile.TemporaryFile() as output:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, shell=shell, stdout=output, stderr=output, cwd=REPO_ROOT
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        said = output.read().decode(errors="replace")
        if process.returncode != 0:
            sys.stderr.write(said[-4000:])
            raise SystemExit(f"benchmark step failed: {command}")
    in_process = [line.split()[-1] for line in said.splitlines() if line.startswith(IN_PROCESS)]
    return Run(
        seconds, usage.ru_maxrss / 1024, in_process=float(in_process[-1]) if in_process else None
    )


def median(runs: Sequence[Run]) -> Run:
    """The run of median wall time (the upper one of an even count)."""
    return sorted(runs, key=lambda run: run.seconds)[len(runs) // 2]


def stored_bytes(registry: RunningRegistry) -> int:
    """Bytes of every blob the registry stores."""
    assert registry.storage is not None
    blobs = registry.storage / "docker" / "registry" / "v2" / "blobs"
    return sum(path.stat().st_size for path in blobs.rglob("data")) if blobs.exists() else 0


def jib_build(project: Path, cache: Path, base: str, *args: str) -> Run:
    env = {**os.environ, "JIB_CACHE_DIR": str(cache), "JIB_FROM_IMAGE": base}
    command = [PYTHON[0], "-m", "hatch_jib", "build", str(project), "--plain", *args]
    return measure(command, env=env)


def pushed(run: Run, registry: RunningRegistry, before: int) -> Run:
    return Run(run.seconds, run.peak_mb, stored_bytes(registry) - before)


# Projects ---------------------------------------------------------------------------------


def write_project(root: Path, name: str, dependencies: Sequence[str], files: int = 0) -> Path:
    """A project with one script, `dependencies`, and `files` small resource files."""
    package = root / name / name.replace("-", "_")
    package.mkdir(parents=True)
    deps = ", ".join(f'"{dep}"' for dep in dependencies)
    (root / name / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[project]\nname = "{name}"\nversion = "1.0"\ndependencies = [{deps}]\n\n'
        f'[project.scripts]\n{name} = "{package.name}:main"\n'
    )
    (package / "__init__.py").write_text("def main():\n    print('hello')\n")
    for index in range(files):
        data = package / "data" / f"{index // 1000:02d}" / f"item{index:05d}.txt"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_text(f"item {index}\n" * 8)
    return root / name


def change_code(project: Path) -> None:
    module = next(project.glob("*/__init__.py"))
    module.write_text(module.read_text() + f"# changed at {time.time()}\n")


# Cases --------------------------------------------------------------------------------------


def incremental_rows(label: str, project: Path, work: Path, repeat: int) -> list[Row]:
    """Cold build (fresh cache), no-op rebuild, code-only rebuild: one project, one target.

    Each repetition has its own empty registry (holding only the base image), its own fresh
    cache and its own copy of the project.
    """
    from tests.support.base_image import push_base_image
    from tests.support.registry import running_registry

    colds, noops, codes = [], [], []
    for attempt in range(repeat):
        run_dir = work / f"incremental-{label}-{attempt}"
        copy = shutil.copytree(project, run_dir / project.name)
        with running_registry(run_dir / "registry", "open") as registry:
            base = push_base_image(registry.host)
            cache = run_dir / "cache"
            target = ["--to", f"{registry.host}/bench/{label}"]
            before = stored_bytes(registry)
            colds.append(pushed(jib_build(copy, cache, base, *target), registry, before))
            before = stored_bytes(registry)
            noops.append(pushed(jib_build(copy, cache, base, *target), registry, before))
            change_code(copy)
            before = stored_bytes(registry)
            codes.append(pushed(jib_build(copy, cache, base, *target), registry, before))
    cold, noop, code = median(colds), median(noops), median(codes)
    return [
        Row(f"{label}: cold build", cold),
        Row(f"{label}: no-op rebuild", noop, "cold build", cold, "<= 0.35"),
        Row(f"{label}: code-only change", code, "cold build", cold, "<= 0.5"),
    ]


def push_rows(label: str, project: Path, work: Path, base: str, repeat: int) -> list[Row]:
    """Ours pushing a built image into an empty registry, against skopeo from an OCI layout."""
    from tests.support.registry import running_registry

    cache = work / f"cache-{label}"
    jib_build(project, cache, base, "--tar", "--output-dir", str(work / f"tar-{label}"))
    layout = work / f"layout-{label}"
    layout.mkdir()
    archive = next((work / f"tar-{label}").glob("*.image.tar"))
    subprocess.run(["tar", "-xf", str(archive), "-C", str(layout)], check=True)

    def into_empty_registry(name: str, command: Callable[[str], Sequence[str] | Run]) -> Run:
        with running_registry(work / f"empty-{name}", "open") as registry:
            made = command(f"{registry.host}/bench/{label}")
            run = made if isinstance(made, Run) else measure(made)
            run = pushed(run, registry, 0)
        return run

    builds, engines, copies = [], [], []
    for attempt in range(repeat):
        builds.append(
            into_empty_registry(
                f"ours-{label}-{attempt}", lambda ref: jib_build(project, cache, base, "--to", ref)
            )
        )
        engines.append(
            into_empty_registry(
                f"engine-{label}-{attempt}",
                lambda ref: [PYTHON[0], str(CHILD), "push-layout", str(layout), ref],
            )
        )
        copies.append(
            into_empty_registry(
                f"skopeo-{label}-{attempt}",
                lambda ref: [
                    "skopeo",
                    "copy",
                    "--dest-tls-verify=false",
                    f"oci:{layout}:latest",
                    f"docker://{ref}:1.0",
                ],
            )
        )
    ours, engine, theirs = median(builds), median(engines), median(copies)
    return [
        Row(f"{label}: build + push, warm cache, empty registry", ours, "skopeo copy", theirs),
        Row(f"{label}: push alone, empty registry", engine, "skopeo copy", theirs, "<= 1.2"),
    ]


def layer_tree_from(cache: Path, digest: str, destination: Path) -> Path:
    destination.mkdir(parents=True)
    blob = cache / "blobs" / "sha256" / digest.removeprefix("sha256:")
    subprocess.run(["tar", "-xzf", str(blob), "-C", str(destination)], check=True)
    return destination


def layer_rows(label: str, tree: Path, work: Path, repeat: int, *, in_process=False) -> list[Row]:
    """Our layer writer on `tree` against `tar | gzip -6 | sha256sum` of the same tree: the
    whole child process, and with `in_process` also the child's own scan and write, without
    the interpreter's start and imports that a build pays once, not per layer."""
    pipeline = f"tar --sort=name -C {tree} -cf - . | gzip -6 | sha256sum"
    ours, theirs = [], []
    for attempt in range(repeat):
        store = work / f"layer-store-{label}-{attempt}"
        ours.append(measure([PYTHON[0], str(CHILD), "write-layer", str(tree), str(store)]))
        theirs.append(measure(["bash", "-o", "pipefail", "-c", pipeline]))
    reference = "tar \\| gzip -6 \\| sha256sum"
    rows = [Row(f"{label}: write one layer", median(ours), reference, median(theirs), "<= 1.0")]
    if in_process:
        if any(run.in_process is None for run in ours):
            raise SystemExit(f"the write-layer child printed no {IN_PROCESS!r} line")
        inside = [Run(run.in_process or 0.0, run.peak_mb) for run in ours]
        case = f"{label}: write one layer, in process"
        rows.append(Row(case, median(inside), reference, median(theirs), "<= 1.0"))
    return rows


def buildah_row(label: str, project: Path, work: Path, registry: RunningRegistry, base: str) -> Row:
    """A cold build against `uv pip install --target` + COPY-only `buildah bud` + push.

    uv compiles bytecode too, as hatch-jib does for a target of this Python: the same content.
    """
    if shutil.which("buildah") is None:
        raise SystemExit("buildah is missing: apt-get install buildah (see scripts/setup)")
    context = work / f"buildah-{label}"
    context.mkdir()
    script = f"""
        set -euo pipefail
        {sys.executable} -m uv pip install -q --compile-bytecode \\
            --target {context}/site-packages --python-version 3.11 \\
            --python-platform x86_64-manylinux_2_36 {project}
        printf 'FROM {base}\\nCOPY site-packages /app/site-packages\\n' > {context}/Containerfile
        buildah --storage-driver vfs bud -q --isolation chroot --tls-verify=false \\
            -t bench-{label} {context} >/dev/null
        buildah --storage-driver vfs push -q --tls-verify=false bench-{label} \\
            docker://{registry.host}/bench/buildah-{label}:1.0
    """
    theirs = measure(["bash", "-c", script])
    cold = jib_build(
        project, work / f"cache-cold2-{label}", base, "--to", f"{registry.host}/x/{label}"
    )
    return Row(f"{label}: cold build and push", cold, "uv --target + buildah bud + push", theirs)


def memory_rows(sizes_mb: Sequence[int], work: Path, repeat: int) -> list[Row]:
    """Peak memory of the layer writer as one file grows: it must stay flat."""
    rows = []
    for size in sizes_mb:
        tree = work / f"big-{size}"
        tree.mkdir()
        with open(tree / "blob.bin", "wb") as handle:
            for _ in range(size):
                handle.write(os.urandom(1 << 20))
        rows += layer_rows(f"{size}-MB", tree, work, repeat)
        shutil.rmtree(tree)
    return rows


# The environment, the report, the entry point -----------------------------------------------


def clean_environment(work: Path) -> str:
    """A virtual environment holding hatch-jib and its dependencies only, with bytecode.

    That is what `hatch build -t jib` runs in (hatch makes a build environment from the
    build requirements), and what a user of `pip install hatch-jib` has. This machine's own
    site-packages holds more: httpx imports its command-line client whenever click, rich and
    pygments are all installed, and httpcore imports trio if it is there, about 0.15 s that
    such an environment does not pay.
    """
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [
            *(sys.executable, "-m", "uv", "pip", "install", "-q", "--compile-bytecode"),
            *("--python", python, str(REPO_ROOT)),
        ],
        check=True,
    )
    return python


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.platform()}, "
        f"Python {platform.python_version()}"
    )


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| case | hatch-jib s | uploaded MB | peak RSS MB | compared with | their s "
        "| ratio | goal |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for row in rows:
        theirs = f"{row.theirs.seconds:.2f}" if row.theirs else ""
        lines.append(
            f"| {row.case} | {row.ours.seconds:.2f} | {row.ours.uploaded / 1e6:.2f} "
            f"| {row.ours.peak_mb:.0f} | {row.reference} | {theirs} | {row.ratio()} "
            f"| {row.goal} |"
        )
    return "\n".join(lines)


@contextmanager
def workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hatch-jib-bench-") as work:
        yield Path(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip heavy deps and 1 GB layers")
    parser.add_argument("--no-buildah", action="store_true", help="skip the buildah comparison")
    parser.add_argument(
        "--only", action="append", choices=GROUPS, help="run only this group of cases"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median shown)")
    parser.add_argument(
        "--system-python",
        action="store_true",
        help="measure hatch-jib in this interpreter's environment, not a clean one",
    )
    args = parser.parse_args()
    groups = set(args.only or GROUPS)
    if args.no_buildah:
        groups.discard("buildah")
    repeat = max(1, args.repeat)

    # An installed wheel comes with bytecode (pip compiles it); this checkout may have none,
    # as PYTHONDONTWRITEBYTECODE is set on some machines, and compiling hatch-jib's sources
    # again in every measured child would cost each about 0.1 s that users never pay.
    compileall.compile_dir(REPO_ROOT / "hatch_jib", quiet=1)

    # Imported here, not at the top, so the measured child modes pay only for hatch-jib.
    from tests.support.base_image import push_base_image
    from tests.support.registry import running_registry

    rows: list[Row] = []
    with workspace() as work, running_registry(work / "registry", "open") as registry:
        if not args.system_python:
            PYTHON[0] = clean_environment(work)
        base = push_base_image(registry.host)
        small = REPO_ROOT / "fixtures" / "projects" / "hello-cli"
        projects = {"small": shutil.copytree(small, work / "small")}
        # The fixture asks for hatch-jib at build time; uv and buildah need only hatchling.
        pyproject = projects["small"] / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace(', "hatch-jib"]', "]"))
        projects["many-files"] = write_project(work, "many-files", ["click"], MANY_FILES)
        if not args.quick and groups & {"incremental", "push", "layer", "buildah"}:
            projects["heavy"] = write_project(work, "heavy", HEAVY_DEPENDENCIES)

        if "incremental" in groups:
            for label, project in projects.items():
                rows += incremental_rows(label, project, work, repeat)
        if "push" in groups:
            for label, project in projects.items():
                rows += push_rows(label, project, work, base, repeat)
        if "layer" in groups:
            tree = projects["many-files"]
            rows += layer_rows("many-files tree", tree, work, repeat, in_process=True)
        if "layer" in groups and "heavy" in projects:
            tree = work / "heavy-site-packages"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "uv",
                    "pip",
                    "install",
                    "-q",
                    "--target",
                    str(tree),
                    "--python-version",
                    "3.11",
                    "--python-platform",
                    "x86_64-manylinux_2_36",
                    "--only-binary",
                    ":all:",
                    *HEAVY_DEPENDENCIES,
                ],
                check=True,
            )
            rows += layer_rows("heavy site-packages tree", tree, work, repeat)
        if "buildah" in groups:
            for label, project in projects.items():
                rows.append(buildah_row(label, project, work, registry, base))
        if "memory" in groups:
            rows += memory_rows([10, 100] if args.quick else [10, 100, 1000], work, repeat)

    where = "this interpreter's site-packages" if args.system_python else "a clean venv"
    print(f"Machine: {machine()}; hatch-jib from {where}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
