"""The book builds at the quick budget with every Sphinx warning an error, and its pages stand on their own.

The build goes to _build/quick (as `make book BUDGET=quick` does), where `make browser-test` reuses it.
"""
from __future__ import annotations

import functools
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from book_site import (QUICK_HTML, QUICK_OUT, ROOT, build_env, html_page, is_chapter, jupyter_book_command,
                       toc_files)

pytestmark = pytest.mark.book

REPO_URL = "https://github.com/metalearn-book/metalearn-book"
COLAB_URL = "https://colab.research.google.com/github/metalearn-book/metalearn-book/blob/main/"
# (tag, attribute) pairs that make the browser fetch something while rendering the page
FETCHING = {("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src"), ("source", "src"),
            ("video", "src"), ("audio", "src"), ("embed", "src"), ("object", "data")}
REMOTE_IN_CSS = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s]+)""")


@pytest.fixture(scope="module")
def build():
    pytest.importorskip("jupyter_book", reason="jupyter-book is not installed: run `make test` (it sets up .venv)")
    proc = subprocess.run(jupyter_book_command(QUICK_OUT), cwd=ROOT, env=build_env("quick"),
                          capture_output=True, text=True)
    return proc


@pytest.fixture(scope="module")
def pages(build):
    """Every HTML page of the built site (not Sphinx's _static/ or _sources/), relative to the html folder."""
    if not QUICK_HTML.is_dir():
        pytest.fail(f"the build wrote no {QUICK_HTML}")
    return sorted(p.relative_to(QUICK_HTML).as_posix() for p in QUICK_HTML.rglob("*.html")
                  if not p.relative_to(QUICK_HTML).parts[0].startswith("_"))


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if (tag, name) in FETCHING and value:
                self.refs.append((tag, name, value))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


@functools.lru_cache(maxsize=None)
def _refs(page: str) -> _Refs:
    parser = _Refs()
    parser.feed((QUICK_HTML / page).read_text(encoding="utf-8"))
    return parser


def _is_remote(url: str) -> bool:
    return url.startswith("//") or urlsplit(url).scheme in ("http", "https")


def _local_target(page: str, url: str) -> Path | None:
    """The file a relative URL of a page points at, or None for data:, blob:, javascript:, about: and #anchors."""
    parts = urlsplit(url)
    if parts.scheme or not parts.path:
        return None
    return (QUICK_HTML / page).parent / unquote(parts.path)


def test_book_builds_with_warnings_as_errors(build):
    output = re.sub(r"\x1b\[[0-9;]*m", "", build.stdout + build.stderr)  # Sphinx colours its output
    problems = [line for line in output.splitlines() if re.search(r"WARNING|ERROR|Error|Traceback", line)]
    assert build.returncode == 0, (
        f"jupyter-book build -W failed (exit {build.returncode}). Warnings and errors:\n"
        + "\n".join(problems[:60]) + "\n--- last lines of the output ---\n" + "\n".join(output.splitlines()[-40:]))


def test_every_page_of_the_toc_is_built(build):
    missing = [html_page(src) for src in toc_files() if not (QUICK_HTML / html_page(src)).is_file()]
    assert not missing, f"pages listed in _toc.yml but not in {QUICK_HTML}: {missing}"
    assert (QUICK_HTML / "index.html").is_file(), "no index.html at the top of the site"


def test_every_chapter_and_book_page_is_in_the_toc():
    listed = set(toc_files())
    sources = sorted(p.relative_to(ROOT).as_posix()
                     for p in [*(ROOT / "chapters").glob("*.ipynb"), *(ROOT / "book").glob("*.md")])
    left_out = [s for s in sources if s not in listed]
    assert not left_out, f"not in _toc.yml, so never built (only_build_toc_files is on): {left_out}"
    assert any(is_chapter(s) for s in listed), "_toc.yml lists no chapter"


def test_no_page_fetches_anything_from_another_host(pages):
    remote = [f"{page}: <{tag} {attr}={value[:120]}>" for page in pages
              for tag, attr, value in _refs(page).refs if _is_remote(value)]
    remote += [f"{page}: <style> {url}" for page in pages
               for url in REMOTE_IN_CSS.findall("".join(_refs(page).styles))]
    assert not remote, "pages load from non-local hosts (the site must render offline):\n" + "\n".join(remote)


def test_no_stylesheet_fetches_anything_from_another_host(build):
    remote = [f"{css.relative_to(QUICK_HTML)}: {url}" for css in QUICK_HTML.joinpath("_static").rglob("*.css")
              for url in REMOTE_IN_CSS.findall(css.read_text(encoding="utf-8", errors="replace"))]
    assert not remote, "stylesheets load from non-local hosts (fonts must be local):\n" + "\n".join(remote)


def test_every_local_image_script_and_stylesheet_exists(pages):
    missing = []
    for page in pages:
        for tag, attr, value in _refs(page).refs:
            target = _local_target(page, value)
            if target is not None and not _is_remote(value) and not target.exists():
                missing.append(f"{page}: <{tag} {attr}={value[:120]}>")
    assert not missing, "references to files that are not in the built site:\n" + "\n".join(missing)


def test_maths_render_with_the_bundled_mathjax(pages):
    for page in (html_page(src) for src in toc_files() if is_chapter(src)):
        scripts = [v for tag, _, v in _refs(page).refs if tag == "script" and "mathjax" in v.lower()]
        assert scripts, f"{page} loads no MathJax (does the chapter have maths? is sphinx-mathjax-offline on?)"
        assert all(not _is_remote(s) and "_static/" in s for s in scripts), f"{page} MathJax not local: {scripts}"


def test_chapters_have_colab_launch_and_repository_buttons(pages):
    for src in toc_files():
        text = (QUICK_HTML / html_page(src)).read_text(encoding="utf-8")
        assert REPO_URL in text, f"{html_page(src)} has no repository button"
        if src.endswith(".ipynb"):
            assert COLAB_URL + src in text, f"{html_page(src)} has no Colab launch button for {src}"
