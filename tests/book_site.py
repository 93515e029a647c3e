"""What the book is made of and where its build lands; shared by tests/test_book_build.py and tests/browser/.

Not a test module (pytest.ini puts tests/ on sys.path so that both can import it).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# `make test` and `make browser-test` both build the quick budget here (the Makefile's --path-output).
QUICK_OUT = ROOT / "_build" / "quick"
QUICK_HTML = QUICK_OUT / "_build" / "html"
SOURCE_SUFFIXES = (".md", ".ipynb", ".rst")
JB_FLAGS = ("-W", "--keep-going", "--all")  # the same flags as the Makefile's JB_FLAGS


def toc_files() -> list[str]:
    """Every source file in _toc.yml, in reading order, relative to the repo root, with its suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                if isinstance(value, list):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [_with_suffix(f) for f in files]


def _with_suffix(name: str) -> str:
    if name.endswith(SOURCE_SUFFIXES):
        return name
    for suffix in SOURCE_SUFFIXES:
        if (ROOT / (name + suffix)).exists():
            return name + suffix
    return name + ".md"


def html_page(source: str) -> str:
    """The built page of a source file, relative to the html folder: chapters/x.ipynb -> chapters/x.html."""
    return str(Path(source).with_suffix(".html"))


def is_chapter(source: str) -> bool:
    return source.startswith("chapters/")


def jupyter_book_command(out_dir: Path) -> list[str]:
    """`jupyter-book build` of this repo into out_dir with warnings as errors, run by this interpreter."""
    return [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
            "build", str(ROOT), "--path-output", str(out_dir), *JB_FLAGS]


def build_env(budget: str) -> dict[str, str]:
    """The environment of a book build: the budget, and this interpreter's own kernels first."""
    kernels = str(Path(sys.prefix) / "share" / "jupyter")
    jupyter_path = os.pathsep.join(p for p in (kernels, os.environ.get("JUPYTER_PATH", "")) if p)
    return {**os.environ, "METALEARN_BUDGET": budget, "JUPYTER_PATH": jupyter_path}
