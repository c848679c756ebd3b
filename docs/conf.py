"""Sphinx configuration of tailscope's documentation (``make docs``: docs/_build/html).

Offline by design: no intersphinx inventories are fetched, and the theme's assets are its own
(no fonts or scripts from another site). The reference tables are generated from the code's
declarations by ``_ext/tailscope_docs.py``; the example notebooks are rendered by myst-nb,
executed once and cached in ``.cache/jupyter-cache`` (``-D nb_execution_mode=off`` renders them
without executing, as the docs tests do).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE / "_ext"))

import tailscope  # noqa: E402

project = "tailscope"
author = "the tailscope authors"
copyright = "2026, the tailscope authors"
release = version = tailscope.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",  # Markdown pages (myst-parser) and the notebooks
    "tailscope_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
templates_path = ["_templates"]

# --- the example notebooks: copied from examples/ (the one copy) into the source tree ----------
NOTEBOOKS = HERE / "examples"
NOTEBOOKS.mkdir(exist_ok=True)
for nb in sorted((ROOT / "examples").glob("*.ipynb")):
    target = NOTEBOOKS / nb.name
    if not target.exists() or target.read_bytes() != nb.read_bytes():
        shutil.copyfile(nb, target)
for stale in NOTEBOOKS.glob("*.ipynb"):
    if not (ROOT / "examples" / stale.name).exists():
        stale.unlink()

nb_execution_mode = os.environ.get("TAILSCOPE_DOCS_NB", "cache")
nb_execution_cache_path = str(ROOT / ".cache" / "jupyter-cache")
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_kernel_rgx_aliases = {".*": "python3"}

# --- MyST ----------------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]  # no dollarmath: MathJax would load from a CDN
myst_heading_anchors = 3

# --- the API reference ------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "inherited-members": False, "show-inheritance": False}
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
numpydoc_show_class_members = True
numpydoc_class_members_toctree = False
numpydoc_show_inherited_class_members = False
# a public object without a docstring: a warning from _ext/tailscope_docs.py (an error under -W)

# offline: no intersphinx (no inventory fetched at build time)
# the guide/* and switching/* globs pick up the pages other changes add; none yet is no error
suppress_warnings = ["myst.header", "toc.empty_glob"]

# --- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"tailscope {release}"
html_static_path = ["_static"]
html_css_files = ["tailscope.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 7,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
    # the reference tables take the width of the page's table of contents
    "secondary_sidebar_items": {"**": ["page-toc", "sourcelink"], "reference/options": [],
                                "reference/columns": [], "reference/formats": []},
}
html_last_updated_fmt = None
html_show_sourcelink = True
html_copy_source = True
