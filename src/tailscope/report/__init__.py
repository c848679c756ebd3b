"""What a person looks at: matplotlib figures (``plots``: an analysis, a fit, a rank selection)
and the self-contained HTML report, also an Analysis's HTML in a notebook (``html``)."""

from .html import notebook_html, write_report

__all__ = ["notebook_html", "write_report"]
