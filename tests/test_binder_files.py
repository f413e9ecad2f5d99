"""The files Binder's repo2docker reads must build the course: checked from their text.

repo2docker cannot run here (no Docker), so these checks encode what its documentation says it
does: with `environment.yml` present it ignores `requirements.txt` and does not install the
repository's own package, so `postBuild` must; a `binder/` or `.binder/` folder or a
`Dockerfile` would make it ignore the files at the root; `runtime.txt` and `apt.txt` must not
contradict the conda environment. Each checker is a pure function over file text that returns
a list of problems, so the tests below feed them broken copies and see each one reported.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement

REPO_ROOT = Path(__file__).resolve().parent.parent
START_NOTEBOOK = "notebooks/00_start_here.ipynb"
PYTHON_SERIES = "3.11"
# Files that make repo2docker ignore environment.yml and postBuild at the root, or build
# something else entirely.
OVERRIDING_PATHS = {
    "binder": "a binder/ folder makes repo2docker ignore the configuration files at the root",
    ".binder": "a .binder/ folder makes repo2docker ignore the configuration files at the root",
    "Dockerfile": "a Dockerfile makes repo2docker build it instead of environment.yml",
    "Pipfile": "a Pipfile is a second Python environment besides environment.yml",
    "Pipfile.lock": "a Pipfile.lock is a second Python environment besides environment.yml",
    "default.nix": "default.nix makes repo2docker build a Nix environment instead",
    "project.toml": "project.toml makes repo2docker use Cloud Native Buildpacks instead",
    "install.R": "install.R adds an R environment the course does not use",
}
BINDER_URL = re.compile(r"https://mybinder\.org/v2/[^\s)\]>\"'`]+")
MARKDOWN_LINK = re.compile(r"\]\((https://mybinder\.org/v2/[^\s)]+)\)")
# An owner or repository name that stands for "yours": a link to it opens nothing.
PLACEHOLDER = re.compile(r"/v2/gh/(OWNER|USER|YOU|your-?name)/", re.IGNORECASE)


def torch_pin(requirements_text: str) -> str | None:
    """The version requirements.txt pins torch to, or None."""
    for raw in requirements_text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        specifiers = list(requirement.specifier)
        exact = len(specifiers) == 1 and specifiers[0].operator == "=="
        if requirement.name.lower() == "torch" and exact:
            return specifiers[0].version
    return None


def _pip_lines(environment: dict) -> list[str]:
    """The lines of environment.yml's `pip:` subsection, if any."""
    lines: list[str] = []
    for entry in environment.get("dependencies") or []:
        if isinstance(entry, dict) and "pip" in entry:
            lines.extend(str(line) for line in entry["pip"] or [])
    return lines


def installs_repository(pip_line: str) -> bool:
    """Whether a pip requirement line installs the repository itself (`.` or `-e .`)."""
    words = shlex.split(pip_line)
    return words in (["."], ["-e", "."], ["--editable", "."], ["-e."], ["./"], ["-e", "./"])


def environment_problems(environment_text: str, requirements_text: str) -> list[str]:
    """What in environment.yml repo2docker would build wrong: Python, torch, stray pip lines."""
    try:
        environment = yaml.safe_load(environment_text)
    except yaml.YAMLError as error:
        return [f"environment.yml: not valid YAML ({error})"]
    if not isinstance(environment, dict):
        return ["environment.yml: not a YAML mapping"]
    dependencies = [str(d) for d in environment.get("dependencies") or [] if isinstance(d, str)]
    problems = []
    if f"python={PYTHON_SERIES}" not in dependencies:
        pythons = [d for d in dependencies if re.match(r"python\b", d)]
        problems.append(f"environment.yml: needs python={PYTHON_SERIES}, has {pythons}")
    pin = torch_pin(requirements_text)
    if pin is None:
        problems.append("requirements.txt: no exact torch pin to compare environment.yml with")
    elif f"pytorch-cpu=={pin}" not in dependencies:
        torches = [d for d in dependencies if re.match(r"(py)?torch", d)]
        problems.append(
            f"environment.yml: needs pytorch-cpu=={pin} (the CPU build of requirements.txt's "
            f"torch=={pin}), has {torches}"
        )
    for line in _pip_lines(environment):
        words = shlex.split(line)
        if words[:1] in (["-r"], ["--requirement"]) or line.startswith("-r"):
            problems.append(
                f"environment.yml pip: {line!r} installs requirements.txt with pip, whose "
                "torch is a CUDA build on Linux; list the packages in environment.yml instead"
            )
        elif words and re.match(r"torch\b", words[0]):
            problems.append(f"environment.yml pip: {line!r} installs PyPI's (CUDA) torch")
    return problems


def postbuild_problems(text: str | None, executable: bool) -> list[str]:
    """What in postBuild would leave lessonlib uninstalled, or break the build silently."""
    if text is None:
        return ["postBuild is missing: repo2docker does not install lessonlib by itself"]
    problems = []
    if not executable:
        problems.append("postBuild is not executable (chmod +x postBuild, and commit the mode)")
    lines = text.splitlines()
    if not lines or not lines[0].startswith("#!"):
        problems.append("postBuild: the first line must be a shebang such as #!/bin/bash")
    commands = [line.split("#", 1)[0].strip() for line in lines[1:]]
    commands = [command for command in commands if command]
    if not any(re.match(r"set\s+(-[a-zA-Z]*e|-o errexit)", c) for c in commands):
        problems.append("postBuild: needs `set -e` (or `set -euo pipefail`) to stop on a failure")
    installs = [c for c in commands if re.search(r"\bpip3? install\b", c)]
    good = [c for c in installs if "--no-deps" in c.split() and _installs_here_editable(c)]
    if not good:
        problems.append(
            "postBuild: needs `python -m pip install --no-deps -e .` to install lessonlib "
            "without letting pip replace conda's packages (PyPI's torch is a CUDA build)"
        )
    for command in installs:
        words = command.split()
        if "-r" in words or "--requirement" in words:
            problems.append(f"postBuild: {command!r} installs requirements.txt over the conda env")
        elif "--no-deps" not in words:
            problems.append(f"postBuild: {command!r} lets pip resolve dependencies from PyPI")
    for command in commands:
        if re.search(r"\b(conda|mamba|micromamba) install\b", command):
            problems.append(f"postBuild: {command!r}: conda packages belong in environment.yml")
        if re.search(r"\bjupyter labextension install\b", command):
            problems.append(
                f"postBuild: {command!r} needs node; the widget extensions are prebuilt wheels"
            )
    return problems


def _installs_here_editable(command: str) -> bool:
    words = command.split()
    pairs = itertools.pairwise(words)
    return "-e." in words or any(a in ("-e", "--editable") and b in (".", "./") for a, b in pairs)


def lessonlib_install_problems(environment_text: str, postbuild_text: str | None) -> list[str]:
    """lessonlib must be installed by postBuild or environment.yml's pip section."""
    environment = yaml.safe_load(environment_text) or {}
    in_environment = any(installs_repository(line) for line in _pip_lines(environment))
    in_postbuild = postbuild_text is not None and any(
        re.search(r"\bpip3? install\b", line) and _installs_here_editable(line.split("#")[0])
        for line in postbuild_text.splitlines()
    )
    if in_environment or in_postbuild:
        return []
    return [
        (
            "nothing installs lessonlib on Binder: repo2docker ignores requirements.txt when "
            "environment.yml exists; add `python -m pip install --no-deps -e .` to postBuild"
        )
    ]


def layout_problems(root_names: set[str]) -> list[str]:
    """Files or folders at the root that would make repo2docker ignore the course's files."""
    problems = [f"{name}: {why}" for name, why in OVERRIDING_PATHS.items() if name in root_names]
    if "environment.yml" not in root_names:
        problems.append("environment.yml is missing at the repository root")
    return problems


def runtime_problems(text: str | None) -> list[str]:
    """runtime.txt, if any, must ask for the same Python as environment.yml."""
    if text is None:
        return []
    wanted = f"python-{PYTHON_SERIES}"
    runtime = text.strip()
    if runtime != wanted:
        return [f"runtime.txt says {runtime!r}; with environment.yml it must be {wanted!r} or go"]
    return []


def apt_problems(text: str | None) -> list[str]:
    """apt.txt, if any, must not bring a second Python or Python packages beside conda's."""
    if text is None:
        return []
    problems = []
    for raw in text.splitlines():
        package = raw.split("#", 1)[0].strip()
        if re.match(r"python[0-9.]*(-|$)", package):
            problems.append(
                f"apt.txt: {package!r} is a system Python package; the course's Python and "
                "packages come from environment.yml"
            )
    return problems


def readme_binder_problems(readme: str, notebooks: set[str]) -> list[str]:
    """The README's Binder section: `make binder-url`, and no link that cannot work.

    The course has no public address of its own, so the README gives no badge; it says how
    a published copy gets its link. A Binder URL it shows (as an example) must still open a
    notebook that exists, and a clickable link must not point at a placeholder repository.
    """
    problems = []
    if "make binder-url" not in readme:
        problems.append("README.md: does not say how to get a launch link (`make binder-url`)")
    for link in MARKDOWN_LINK.findall(readme):
        if PLACEHOLDER.search(link):
            problems.append(f"README.md: the link {link} points at a placeholder repository")
    for url in BINDER_URL.findall(readme):
        opened = _opens(url)
        if opened is not None and opened not in notebooks:
            problems.append(f"README.md: Binder URL {url} opens {opened}, which does not exist")
        if not re.match(r"https://mybinder\.org/v2/gh/[^/?]+/[^/?]+/[^/?]+", url):
            problems.append(f"README.md: {url} is not .../v2/gh/OWNER/REPO/REF")
    return problems


def _opens(url: str) -> str | None:
    """The repository path a Binder URL opens (from labpath= or urlpath=lab/tree/), or None."""
    query = url.partition("?")[2].replace("%2F", "/").replace("%2f", "/")
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "labpath":
            return value
        if key == "urlpath" and value.startswith(("lab/tree/", "/lab/tree/")):
            return value.lstrip("/").removeprefix("lab/tree/")
    return None


# ----- the repository's files ----------------------------------------------------------------


def read_optional(name: str) -> str | None:
    path = REPO_ROOT / name
    return path.read_text(encoding="utf-8") if path.exists() else None


def repository_notebooks() -> set[str]:
    return {f"notebooks/{path.name}" for path in (REPO_ROOT / "notebooks").glob("*.ipynb")}


def test_environment_builds_python_311_and_cpu_torch_at_the_pin():
    problems = environment_problems(read("environment.yml"), read("requirements.txt"))
    assert problems == []


def test_postbuild_installs_lessonlib_without_dependencies():
    path = REPO_ROOT / "postBuild"
    executable = path.exists() and os.access(path, os.X_OK)
    assert postbuild_problems(read_optional("postBuild"), executable) == []


def test_something_installs_lessonlib():
    problems = lessonlib_install_problems(read("environment.yml"), read_optional("postBuild"))
    assert problems == []


def test_nothing_overrides_the_root_configuration():
    assert layout_problems({path.name for path in REPO_ROOT.iterdir()}) == []
    assert runtime_problems(read_optional("runtime.txt")) == []
    assert apt_problems(read_optional("apt.txt")) == []


def test_readme_says_how_to_launch_a_published_copy():
    assert START_NOTEBOOK in repository_notebooks()
    assert readme_binder_problems(read("README.md"), repository_notebooks()) == []


# ----- make binder-url ----------------------------------------------------------------------


def binder_url(tmp_path: Path, remote: str | None) -> subprocess.CompletedProcess:
    """`make -s binder-url` in a new git repository with `remote` as origin (None: no remote)."""
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    if remote is not None:
        subprocess.run(["git", "remote", "add", "origin", remote], cwd=tmp_path, check=True)
    return subprocess.run(
        ["make", "-s", "binder-url"], cwd=tmp_path, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    "remote",
    [
        "https://github.com/alice/decoding.git",
        "https://github.com/alice/decoding",
        "git@github.com:alice/decoding.git",
        "ssh://git@github.com/alice/decoding.git",
    ],
)
def test_make_binder_url_builds_the_link_from_a_github_remote(tmp_path: Path, remote: str):
    result = binder_url(tmp_path, remote)
    assert result.returncode == 0, result.stdout + result.stderr
    url = result.stdout.strip()
    assert url == "https://mybinder.org/v2/gh/alice/decoding/HEAD?labpath=" + START_NOTEBOOK
    assert _opens(url) in repository_notebooks()


@pytest.mark.parametrize(
    ("remote", "words"),
    [
        (None, "no git remote 'origin'"),
        ("https://gitlab.com/alice/decoding.git", "not a GitHub repository"),
        ("https://github.com/alice/decoding/tree/main", "not a GitHub repository"),
    ],
)
def test_make_binder_url_explains_what_it_cannot_use(tmp_path: Path, remote, words: str):
    result = binder_url(tmp_path, remote)
    assert result.returncode != 0
    assert words in result.stdout + result.stderr
    assert "mybinder.org/v2" not in result.stdout


def read(name: str) -> str:
    return (REPO_ROOT / name).read_text(encoding="utf-8")


# ----- each check reports a broken copy ------------------------------------------------------

GOOD_ENVIRONMENT = """\
channels: [conda-forge]
dependencies:
  - python=3.11
  - pytorch-cpu==2.13.0
  - numpy==2.4.6
"""
GOOD_REQUIREMENTS = "torch==2.13.0\nnumpy==2.4.6\n"
GOOD_POSTBUILD = "#!/bin/bash\nset -euo pipefail\npython -m pip install --no-deps -e .\n"
GOOD_README = (
    "In your published copy, `make binder-url` prints its link, for example "
    "[this one](https://mybinder.org/v2/gh/someone/decoding/HEAD?labpath=notebooks/00_start_here.ipynb).\n"
)
NOTEBOOKS = {START_NOTEBOOK, "notebooks/01_greedy_loops.ipynb"}


def test_the_good_copies_pass():
    # The broken copies below are edits of these: each edit alone must be reported.
    assert environment_problems(GOOD_ENVIRONMENT, GOOD_REQUIREMENTS) == []
    assert postbuild_problems(GOOD_POSTBUILD, executable=True) == []
    assert lessonlib_install_problems(GOOD_ENVIRONMENT, GOOD_POSTBUILD) == []
    assert readme_binder_problems(GOOD_README, NOTEBOOKS) == []
    assert layout_problems({"environment.yml", "postBuild", "requirements.txt"}) == []
    assert runtime_problems("python-3.11\n") == []
    assert apt_problems("graphviz\n") == []


ENVIRONMENT_EDITS = {
    "python 3.12": ("python=3.11", "python=3.12", "needs python=3.11"),
    "no python": ("  - python=3.11\n", "", "needs python=3.11"),
    "torch moved": ("pytorch-cpu==2.13.0", "pytorch-cpu==2.12.0", "needs pytorch-cpu==2.13.0"),
    "CUDA pytorch": ("pytorch-cpu==2.13.0", "pytorch==2.13.0", "needs pytorch-cpu==2.13.0"),
    "pip requirements": (
        "  - numpy==2.4.6\n",
        "  - numpy==2.4.6\n  - pip:\n      - -r requirements.txt\n",
        "installs requirements.txt with pip",
    ),
    "pip torch": (
        "  - numpy==2.4.6\n",
        "  - numpy==2.4.6\n  - pip:\n      - torch==2.13.0\n",
        "installs PyPI's (CUDA) torch",
    ),
    "not yaml": ("channels: [conda-forge]", "channels: [conda-forge", "not valid YAML"),
}


@pytest.mark.parametrize(
    ("old", "new", "fragment"), ENVIRONMENT_EDITS.values(), ids=ENVIRONMENT_EDITS.keys()
)
def test_environment_check_reports(old, new, fragment):
    assert GOOD_ENVIRONMENT.count(old) == 1
    problems = environment_problems(GOOD_ENVIRONMENT.replace(old, new), GOOD_REQUIREMENTS)
    assert any(fragment in problem for problem in problems), problems


def test_environment_check_needs_a_torch_pin_to_compare_with():
    problems = environment_problems(GOOD_ENVIRONMENT, "torch>=2.13\nnumpy==2.4.6\n")
    assert problems == ["requirements.txt: no exact torch pin to compare environment.yml with"]


POSTBUILD_EDITS = {
    "no shebang": ("#!/bin/bash\n", "", "shebang"),
    "no set -e": ("set -euo pipefail\n", "", "needs `set -e`"),
    "with deps": ("--no-deps ", "", "lets pip resolve dependencies"),
    "not editable here": ("-e .", "lessonlib", "needs `python -m pip install --no-deps -e .`"),
    "requirements": (
        "python -m pip install --no-deps -e .\n",
        "python -m pip install --no-deps -e .\npip install --no-deps -r requirements.txt\n",
        "installs requirements.txt over the conda env",
    ),
    "conda install": (
        "python -m pip",
        "conda install -y numpy\npython -m pip",
        "conda packages belong in environment.yml",
    ),
    "labextension": (
        "python -m pip",
        "jupyter labextension install jupyter-matplotlib\npython -m pip",
        "needs node",
    ),
}


@pytest.mark.parametrize(
    ("old", "new", "fragment"), POSTBUILD_EDITS.values(), ids=POSTBUILD_EDITS.keys()
)
def test_postbuild_check_reports(old, new, fragment):
    assert GOOD_POSTBUILD.count(old) == 1
    problems = postbuild_problems(GOOD_POSTBUILD.replace(old, new), executable=True)
    assert any(fragment in problem for problem in problems), problems


def test_postbuild_check_reports_a_missing_or_non_executable_script():
    assert postbuild_problems(None, executable=False) == [
        "postBuild is missing: repo2docker does not install lessonlib by itself"
    ]
    assert postbuild_problems(GOOD_POSTBUILD, executable=False) == [
        "postBuild is not executable (chmod +x postBuild, and commit the mode)"
    ]


def test_lessonlib_install_check():
    no_install = "#!/bin/bash\nset -e\necho nothing to do\n"
    assert "nothing installs lessonlib" in lessonlib_install_problems(GOOD_ENVIRONMENT, None)[0]
    assert lessonlib_install_problems(GOOD_ENVIRONMENT, no_install) != []
    # An editable install from environment.yml's pip section counts too.
    with_pip = GOOD_ENVIRONMENT + "  - pip\n  - pip:\n      - -e .\n"
    assert lessonlib_install_problems(with_pip, no_install) == []


@pytest.mark.parametrize("name", sorted(OVERRIDING_PATHS))
def test_layout_check_reports_files_that_override_the_root(name):
    problems = layout_problems({"environment.yml", "postBuild", name})
    assert problems == [f"{name}: {OVERRIDING_PATHS[name]}"]


def test_layout_check_reports_a_missing_environment():
    assert layout_problems({"requirements.txt", "postBuild"}) == [
        "environment.yml is missing at the repository root"
    ]


def test_runtime_and_apt_checks_report_contradictions():
    assert runtime_problems("python-3.10\n") != []
    assert runtime_problems("r-4.3-2024-01-01\n") != []
    assert apt_problems("graphviz\npython3-numpy  # for plots\n") == [
        (
            "apt.txt: 'python3-numpy' is a system Python package; the course's Python and "
            "packages come from environment.yml"
        )
    ]
    assert apt_problems("python3\n") != []


README_EDITS = {
    "no instructions": ("`make binder-url`", "the badge", "does not say how"),
    "placeholder": ("someone/decoding", "OWNER/REPO", "placeholder repository"),
    "missing notebook": ("00_start_here", "00_start", "which does not exist"),
    "not gh/owner/repo/ref": ("someone/decoding/HEAD", "decoding", "is not .../v2/gh/OWNER/REPO"),
}


@pytest.mark.parametrize(("old", "new", "fragment"), README_EDITS.values(), ids=README_EDITS.keys())
def test_readme_check_reports(old, new, fragment):
    assert GOOD_README.count(old) == 1
    problems = readme_binder_problems(GOOD_README.replace(old, new), NOTEBOOKS)
    assert any(fragment in problem for problem in problems), problems


def test_readme_check_reads_urlpath_links_and_names_a_missing_notebook():
    urlpath = GOOD_README.replace(
        "labpath=notebooks/00_start_here.ipynb",
        "urlpath=lab%2Ftree%2Fnotebooks%2F00_start_here.ipynb",
    )
    assert readme_binder_problems(urlpath, NOTEBOOKS) == []
    stale = GOOD_README + "Or `https://mybinder.org/v2/gh/a/b/HEAD?labpath=notebooks/99_x.ipynb`.\n"
    assert readme_binder_problems(stale, NOTEBOOKS) == [
        (
            "README.md: Binder URL https://mybinder.org/v2/gh/a/b/HEAD?labpath=notebooks/99_x.ipynb"
            " opens notebooks/99_x.ipynb, which does not exist"
        )
    ]
