"""The core install is the context pruner: it needs neither torch nor transformers, which come with
the `models` extra, and the model side says so when they are missing."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

PYPROJECT = (Path(__file__).parents[1] / "pyproject.toml").read_text()
# Make `import torch` / `import transformers` fail in a fresh interpreter, as on a core-only install.
WITHOUT_MODEL_SIDE = "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"


def run_without_model_side(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_MODEL_SIDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def requirement_names(block: str) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in re.findall(r'"([^"]+)"', block)}


def test_core_dependencies_leave_out_the_model_side():
    core = re.search(r"^dependencies = \[(.*?)^\]", PYPROJECT, re.S | re.M).group(1)
    models = re.search(r"^models = \[(.*?)\]", PYPROJECT, re.M).group(1)
    assert requirement_names(core) & {"torch", "transformers"} == set()
    assert requirement_names(models) == {"torch", "transformers"}


def test_context_pruning_runs_without_torch_or_transformers():
    result = run_without_model_side(
        """
        from tokenprune.context import HtmlPruner, clean_html
        page = "<html><body><nav>menu</nav><p>Etna erupted in 2021.</p><p>Other words here.</p></body></html>"
        assert "Etna" in clean_html(page, output="text")
        res = HtmlPruner(budget=5, output="text").prune(page, query="When did Etna erupt?")
        assert 0 < res.tokens_after <= 5, res
        import tokenprune
        print(tokenprune.__version__)
        """
    )
    assert result.returncode == 0, result.stderr


def test_model_side_names_the_extra_when_torch_is_missing():
    result = run_without_model_side(
        """
        import tokenprune as tp
        try:
            tp.DivPrune
        except ModuleNotFoundError as error:
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "tokenprune.DivPrune needs torch" in result.stdout
    assert "pip install 'tokenprune[models]'" in result.stdout
