"""The lab's Python tools are one package tree rooted at the repository (captures/__init__.py): no
file adds to the module search path, every module imports from the root by its full name, every
folder of them is a package, and every `python3 -m` the Makefile and the docs show names a module
that is there. Reads files and imports modules in a process of its own; no servers."""

import glob
import os
import re
import subprocess
import sys

from tests.e2e.harness import test

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("captures", "report", "tests")

# Any change to the search path in a file: sys.path.insert/append/extend, an assignment or an index
# into it, site.addsitedir. (Written so that this pattern's own text does not match it.)
PATH_CHANGE = re.compile(r"\bsys\s*\.\s*path\s*(\.\s*(insert|append|extend)\b|\[|\+=|=(?!=))|\bsite\s*\.\s*addsitedir\b")


def python_files():
    """Every .py file of the tree (the build and platform caches left out), relative to the root."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in (".git", "build", ".platforms", "__pycache__"))
        found += [os.path.relpath(os.path.join(folder, f), ROOT) for f in sorted(files) if f.endswith(".py")]
    return found


def module_name(path):
    name = path[:-len(".py")].replace(os.sep, ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


@test
def no_python_tool_adds_to_the_module_search_path(lab):
    """Issue 23: the tools import each other as packages from the repository root, never by a
    sys.path insertion (which hid which file a name came from, and let a test import a bench script)."""
    found = []
    for path in python_files():
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if PATH_CHANGE.search(line.split("#", 1)[0]):
                    found.append(f"{path}:{number}: {line.strip()}")
    assert not found, ("the search path is changed here; import by the full name from the repository root "
                       "instead (captures/__init__.py):\n" + "\n".join(found))
    # The pattern finds what it is for (the examples built here, so that this file has none).
    path = "sys" + ".path"
    for line in (path + ".insert(0, ROOT)", path + ".append(x)", path + "[:0] = [x]", path + " = [x]",
                 path + " += [x]", "site" + ".addsitedir(x)"):
        assert PATH_CHANGE.search(line), line
    assert not PATH_CHANGE.search(f"if x in {path}: pass") and not PATH_CHANGE.search(f"{path} == y")


@test
def every_python_file_is_in_a_package_and_imports_from_the_root(lab):
    """Every .py file sits in one of the packages (an __init__.py in each of its folders), and every
    one of them imports in a fresh interpreter started at the repository root, as `python3 -m` runs
    them: a name that only a path insertion made importable fails here. A module that needs a Debian
    package this machine lacks (python3-aiosmtpd for the benchmark's peer) is let off, by name."""
    outside = []
    for path in python_files():
        parts = path.split(os.sep)
        folders = [os.path.join(*parts[:i]) for i in range(1, len(parts))]
        if parts[0] not in PACKAGES or not all(os.path.isfile(os.path.join(ROOT, f, "__init__.py")) for f in folders):
            outside.append(path)
    assert not outside, f"Python files outside the packages {PACKAGES} (each folder needs an __init__.py): {outside}"
    names = [module_name(p) for p in python_files()]
    probe = """
import importlib, sys
ours = {%s}
failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in ours:
            failed.append(f"{name}: {e}")
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
""" % ", ".join(repr(p) for p in PACKAGES)
    done = subprocess.run([sys.executable, "-c", probe] + names, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # The one file run by its path in the rules every contributor follows: it restarts as the module.
    elsewhere = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "run_tests.py"), "--help"], cwd="/",
                               capture_output=True, text=True, timeout=60)
    assert elsewhere.returncode == 0 and "--only" in elsewhere.stdout, elsewhere.stdout + elsewhere.stderr


@test
def every_python_command_the_makefile_and_docs_show_names_a_module_that_is_there(lab):
    """`python3 -m NAME` in the Makefile, README.md, docs/*.md and the folders' READMEs: each NAME of
    ours is a file of the tree; and no line runs one of our tools by its path (`python3
    captures/capture.py`), which cannot import the package it is in. tests/run_tests.py is the one
    exception: run as a file, it restarts as the module (the contributors' rules call it so)."""
    texts = [os.path.join(ROOT, "Makefile"), os.path.join(ROOT, "README.md")]
    texts += sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + sorted(glob.glob(os.path.join(ROOT, "*", "README.md")))
    missing, by_path, seen = [], [], 0
    for text in texts:
        with open(text, encoding="utf-8") as f:
            content = f.read()
        where = os.path.relpath(text, ROOT)
        for name in re.findall(r"python3 -m ([A-Za-z_][\w.]*)", content):
            if name.split(".")[0] not in PACKAGES:
                continue  # the standard library's (http.server)
            seen += 1
            if not (os.path.isfile(os.path.join(ROOT, *name.split(".")) + ".py")
                    or os.path.isfile(os.path.join(ROOT, *name.split("."), "__init__.py"))):
                missing.append(f"{where}: python3 -m {name}")
        by_path += [f"{where}: {m}" for m in re.findall(r"python3 ((?:%s)/[\w/]+\.py)" % "|".join(PACKAGES), content)
                    if m != "tests/run_tests.py"]
    assert seen >= 10, seen  # the Makefile's targets are among them
    assert not missing, "no such module: " + "; ".join(missing)
    assert not by_path, "run these as modules from the repository root (python3 -m ...): " + "; ".join(by_path)
