"""Conventions every chapter notebook keeps (they make the book build, Colab and the tests work alike)."""

from pathlib import Path

import nbformat
import pytest

CHAPTERS = sorted(Path(__file__).resolve().parent.parent.joinpath("chapters").glob("*.ipynb"))


@pytest.fixture(scope="module")
def notebooks():
    return {p.name: nbformat.read(p, as_version=4) for p in CHAPTERS}


def test_every_chapter_starts_with_the_same_colab_setup_cell(notebooks):
    firsts = {name: nb.cells[0] for name, nb in notebooks.items()}
    sources = {c.source for c in firsts.values()}
    assert len(sources) == 1, "the set-up cells differ between chapters"
    (source,) = sources
    assert 'if "google.colab" in sys.modules' in source and "git" in source and "pip" in source
    assert all(c.metadata.get("tags") == ["hide-cell"] for c in firsts.values())


def test_title_follows_setup_without_a_number(notebooks):
    for name, nb in notebooks.items():
        title = nb.cells[1]
        assert title.cell_type == "markdown" and title.source.startswith("# "), name
        assert not title.source[2].isdigit(), f"{name}: the toc numbers chapters; the title must not"


def test_live_widget_cells_are_left_out_of_the_site_and_the_book_build(notebooks):
    found = 0
    for name, nb in notebooks.items():
        for cell in nb.cells:
            if cell.cell_type == "code" and (".live(" in cell.source or "live_explorer(" in cell.source):
                found += 1
                tags = set(cell.metadata.get("tags", []))
                assert {"remove-output", "skip-execution"} <= tags, f"{name}: {cell.source[:60]!r}"
    assert found >= 3


def test_notebooks_are_saved_without_outputs(notebooks):
    for name, nb in notebooks.items():
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{name} has outputs saved"
