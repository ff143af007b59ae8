"""`tokenprune prune-html` end to end."""

import gzip
import io
import subprocess
import sys

import pytest
from _context_fixtures import ARTICLE

from tokenprune.cli import main


def test_prune_html_file_prints_content_and_stats(tmp_path, capsys):
    page = tmp_path / "page.html.gz"
    page.write_bytes(gzip.compress(ARTICLE.encode()))
    assert (
        main(
            ["prune-html", str(page), "--query", "vineyards grapes", "--budget", "40", "--output", "markdown"]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "vineyards" in out and "<p>" not in out
    assert err.startswith("tokens ") and "budget 40" in err and len(err.strip().splitlines()) == 1


def test_prune_html_reads_stdin(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(ARTICLE.encode())))
    assert main(["prune-html", "-", "-b", "500"]) == 0
    assert "<h1>Etna erupts again</h1>" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["prune-html", "missing.html", "-b", "5"], "no such file"), (["prune-html", "-", "-b", "0"], "budget")],
)
def test_prune_html_errors(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"<p>x</p>")))
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_subcommand():
    with pytest.raises(SystemExit):
        main(["nope"])


def test_context_pruning_never_imports_torch():
    code = (
        "import sys, tokenprune, tokenprune.context, tokenprune.cli, tokenprune.context.cli; "
        "assert 'torch' not in sys.modules; import tokenprune as tp; tp.DivPrune; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
