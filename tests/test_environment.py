"""requirements.txt, environment.yml (Binder) and pyproject.toml must describe one environment.

The checker is a set of pure functions over file text, so the tests below can feed it edited
copies and show that it reports each kind of drift.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

REPO_ROOT = Path(__file__).resolve().parent.parent
TORCH_PIN = "2.13.0"
PYTHON_SERIES = "3.11"
# pip name -> conda-forge name, where they differ.
CONDA_NAMES = {
    "torch": "pytorch-cpu",
    "matplotlib": "matplotlib-base",
    "playwright": "playwright-python",
}
PIP_NAMES = {conda: pip for pip, conda in CONDA_NAMES.items()}
# Extras that `make` never installs, so requirements.txt does not pin them.
UNPINNED_EXTRAS: set[str] = set()  # none today
CONDA_ENTRY = re.compile(r"(?P<name>[A-Za-z0-9_.\-]+)\s*(?:(?P<op>==|=)\s*(?P<version>\S+))?")


def read(name: str) -> str:
    """Text of a file at the repository root."""
    return (REPO_ROOT / name).read_text(encoding="utf-8")


def exact_pin(line: str) -> tuple[str, str] | None:
    """(canonical name, version) if `line` is `name==version` with nothing else, else None."""
    try:
        requirement = Requirement(line)
    except InvalidRequirement:
        return None
    specifiers = list(requirement.specifier)
    if requirement.url or requirement.marker or requirement.extras or len(specifiers) != 1:
        return None
    (specifier,) = specifiers
    if specifier.operator != "==" or "*" in specifier.version:
        return None
    return canonicalize_name(requirement.name), specifier.version


def requirement_pins(text: str) -> tuple[dict[str, str], list[str]]:
    """Pins of requirements.txt in file order, and the problems with its lines."""
    pins: dict[str, str] = {}
    problems = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"requirements.txt line {number}"
        if line.startswith("-"):
            problems.append(f"{where}: option {line!r} is not a pin (CI installs this file)")
            continue
        pin = exact_pin(line)
        if pin is None:
            problems.append(f"{where}: {line!r} is not pinned exactly as name==version")
            continue
        name, version = pin
        if name in pins:
            problems.append(f"{where}: {name} is pinned twice")
        pins[name] = version
    if pins and next(iter(pins)) != "torch":
        problems.append("requirements.txt: torch must be the first requirement")
    if pins.get("torch") != TORCH_PIN:
        problems.append(
            f"requirements.txt: torch must be pinned to {TORCH_PIN}, got {pins.get('torch')}"
        )
    return pins, problems


def environment_pins(text: str) -> tuple[dict[str, str], list[str]]:
    """Pins of environment.yml under pip names, and the problems with its entries."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        return {}, ["environment.yml: not a YAML mapping"]
    problems = []
    if data.get("channels") != ["conda-forge"]:
        problems.append(
            f"environment.yml: channels must be ['conda-forge'], got {data.get('channels')}"
        )
    pins: dict[str, str] = {}

    def add(name: str, version: str, entry: str) -> None:
        if name in pins:
            problems.append(f"environment.yml: {name} is pinned twice ({entry!r})")
        pins[name] = version

    python_seen = False
    for entry in data.get("dependencies") or []:
        if isinstance(entry, dict) and list(entry) == ["pip"]:
            for line in entry["pip"] or []:
                pin = exact_pin(str(line))
                if pin is None:
                    problems.append(f"environment.yml pip: {line!r} is not pinned as name==version")
                else:
                    add(*pin, entry=str(line))
            continue
        match = CONDA_ENTRY.fullmatch(str(entry))
        if not isinstance(entry, str) or match is None:
            problems.append(f"environment.yml: cannot read dependency {entry!r}")
            continue
        conda_name = match["name"].lower()
        if conda_name == "python":
            python_seen = True
            if match["version"] != PYTHON_SERIES:
                problems.append(f"environment.yml: python must be {PYTHON_SERIES}, got {entry!r}")
            continue
        if conda_name == "pip":  # the installer for a pip: subsection, not a course package
            continue
        if match["op"] != "==":
            problems.append(f"environment.yml: {entry!r} is not pinned exactly as name==version")
            continue
        if conda_name in CONDA_NAMES:
            problems.append(
                f"environment.yml: {entry!r} must use the conda-forge name "
                f"{CONDA_NAMES[conda_name]}"
            )
            continue
        add(canonicalize_name(PIP_NAMES.get(conda_name, conda_name)), match["version"], entry)
    if not python_seen:
        problems.append(f"environment.yml: python={PYTHON_SERIES} is missing")
    return pins, problems


def same_version(a: str, b: str) -> bool:
    """Whether two version strings name the same release."""
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def compare_pins(requirements: dict[str, str], environment: dict[str, str]) -> list[str]:
    """Packages missing from either file, or pinned to different versions."""
    problems = []
    for name, version in requirements.items():
        conda = CONDA_NAMES.get(name, name)
        if name not in environment:
            problems.append(
                f"{name}=={version} is in requirements.txt but missing from environment.yml "
                f"(as {conda})"
            )
        elif not same_version(version, environment[name]):
            problems.append(
                f"{name}: requirements.txt pins {version}, environment.yml pins "
                f"{environment[name]} (as {conda})"
            )
    for name, version in environment.items():
        if name not in requirements:
            problems.append(
                f"{name}=={version} is in environment.yml but missing from requirements.txt"
            )
    return problems


def pyproject_problems(text: str, pins: dict[str, str]) -> list[str]:
    """Declared dependencies that are unpinned or whose range excludes the pin, and vice versa."""
    project = tomllib.loads(text).get("project", {})
    problems = []
    requires_python = project.get("requires-python", "")
    if not Requirement(f"python{requires_python}").specifier.contains(PYTHON_SERIES):
        problems.append(f"pyproject.toml: requires-python {requires_python!r} excludes 3.11")
    groups = {"dependencies": project.get("dependencies", [])}
    for extra, lines in project.get("optional-dependencies", {}).items():
        groups[f"optional-dependencies.{extra}"] = lines
    declared = set()
    for group, lines in groups.items():
        for line in lines:
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            declared.add(name)
            if group.removeprefix("optional-dependencies.") in UNPINNED_EXTRAS:
                continue
            if name not in pins:
                problems.append(f"pyproject.toml {group}: {line!r} has no pin in requirements.txt")
            elif not requirement.specifier.contains(pins[name], prereleases=True):
                problems.append(
                    f"pyproject.toml {group}: range {line!r} does not admit the pinned "
                    f"{name}=={pins[name]}"
                )
    for name in pins:
        if name not in declared:
            problems.append(f"requirements.txt pins {name} but pyproject.toml does not declare it")
    return problems


def check_all(requirements_text: str, environment_text: str, pyproject_text: str) -> list[str]:
    """Every disagreement between the three files (empty when they agree)."""
    requirements, problems = requirement_pins(requirements_text)
    environment, env_problems = environment_pins(environment_text)
    return [
        *problems,
        *env_problems,
        *compare_pins(requirements, environment),
        *pyproject_problems(pyproject_text, requirements),
    ]


def repository_files() -> dict[str, str]:
    return {name: read(name) for name in ("requirements.txt", "environment.yml", "pyproject.toml")}


def run_check(files: dict[str, str]) -> list[str]:
    return check_all(files["requirements.txt"], files["environment.yml"], files["pyproject.toml"])


def test_repository_files_agree():
    assert run_check(repository_files()) == []


def test_requirements_pin_torch_first_and_exactly():
    pins, problems = requirement_pins(read("requirements.txt"))
    assert problems == []
    assert next(iter(pins)) == "torch"
    assert pins["torch"] == TORCH_PIN
    # The pins the course cannot run without are all there.
    assert {"jupyterlab", "ipywidgets", "ipympl", "matplotlib", "numpy", "safetensors"} <= set(pins)


def test_environment_uses_cpu_torch_from_conda_forge_only():
    data = yaml.safe_load(read("environment.yml"))
    assert data["channels"] == ["conda-forge"]
    assert f"pytorch-cpu=={TORCH_PIN}" in data["dependencies"]
    assert f"python={PYTHON_SERIES}" in data["dependencies"]


# Each variant edits the real files (file, old text, new text) and names a fragment that the
# checker's report must contain.
DRIFT = {
    "wrong version in requirements": (
        [("requirements.txt", "numpy==2.4.6", "numpy==2.4.5")],
        "numpy: requirements.txt pins 2.4.5, environment.yml pins 2.4.6",
    ),
    "wrong torch version in environment": (
        [("environment.yml", "pytorch-cpu==2.13.0", "pytorch-cpu==2.12.0")],
        "torch: requirements.txt pins 2.13.0, environment.yml pins 2.12.0 (as pytorch-cpu)",
    ),
    "package missing from requirements": (
        [("requirements.txt", "safetensors==0.8.0\n", "")],
        "safetensors==0.8.0 is in environment.yml but missing from requirements.txt",
    ),
    "package missing from environment": (
        [("environment.yml", "  - ipympl==0.10.0\n", "")],
        "ipympl==0.10.0 is in requirements.txt but missing from environment.yml",
    ),
    "range instead of pin": (
        [("requirements.txt", "tqdm==4.70.1", "tqdm>=4.70")],
        "'tqdm>=4.70' is not pinned exactly",
    ),
    "bare name": ([("requirements.txt", "tqdm==4.70.1", "tqdm")], "'tqdm' is not pinned exactly"),
    "index option": (
        [
            (
                "requirements.txt",
                "torch==2.13.0\n",
                "--extra-index-url https://x.invalid\ntorch==2.13.0\n",
            )
        ],
        "option '--extra-index-url https://x.invalid' is not a pin",
    ),
    "torch moved in both files": (
        [
            ("requirements.txt", "torch==2.13.0", "torch==2.12.0"),
            ("environment.yml", "pytorch-cpu==2.13.0", "pytorch-cpu==2.12.0"),
        ],
        "torch must be pinned to 2.13.0, got 2.12.0",
    ),
    "torch not first": (
        [
            ("requirements.txt", "torch==2.13.0\n", ""),
            ("requirements.txt", "tqdm==", "torch==2.13.0\ntqdm=="),
        ],
        "torch must be the first requirement",
    ),
    "duplicate pin": (
        [("requirements.txt", "ruff==0.17.6\n", "ruff==0.17.6\nruff==0.17.6\n")],
        "ruff is pinned twice",
    ),
    "pyproject range excludes pin": (
        [("pyproject.toml", '"numpy>=2.4,<3"', '"numpy>=3,<4"')],
        "range 'numpy>=3,<4' does not admit the pinned numpy==2.4.6",
    ),
    "pin not declared in pyproject": (
        [("pyproject.toml", '    "psutil>=7.2,<8",\n', "")],
        "requirements.txt pins psutil but pyproject.toml does not declare it",
    ),
    "extra channel": (
        [("environment.yml", "  - conda-forge\n", "  - conda-forge\n  - defaults\n")],
        "channels must be ['conda-forge']",
    ),
    "other python": ([("environment.yml", "python=3.11", "python=3.12")], "python must be 3.11"),
    "pip name in conda section": (
        [("environment.yml", "matplotlib-base==3.11.2", "matplotlib==3.11.2")],
        "must use the conda-forge name matplotlib-base",
    ),
    "unpinned conda entry": (
        [("environment.yml", "  - tqdm==4.70.1", "  - tqdm")],
        "'tqdm' is not pinned exactly",
    ),
    "wrong version in pip subsection": (
        [("environment.yml", "  - ruff==0.17.6\n", "  - pip\n  - pip:\n      - ruff==0.17.5\n")],
        "ruff: requirements.txt pins 0.17.6, environment.yml pins 0.17.5",
    ),
}


def edited(edits: list[tuple[str, str, str]]) -> dict[str, str]:
    """The repository files with each (file, old, new) edit applied once."""
    files = repository_files()
    for name, old, new in edits:
        assert files[name].count(old) == 1, f"{old!r} must occur once in {name}"
        files[name] = files[name].replace(old, new)
    return files


@pytest.mark.parametrize(("edits", "fragment"), DRIFT.values(), ids=DRIFT.keys())
def test_checker_reports_drift(edits, fragment):
    problems = run_check(edited(edits))
    assert any(fragment in problem for problem in problems), problems


def test_checker_accepts_a_package_moved_to_the_pip_subsection():
    files = edited(
        [("environment.yml", "  - ruff==0.17.6\n", "  - pip\n  - pip:\n      - ruff==0.17.6\n")]
    )
    assert run_check(files) == []
