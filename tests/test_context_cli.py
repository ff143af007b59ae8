"""`tokenprune prune-html` end to end."""

import gzip
import io
import re
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


def _error_of(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"<p>not gzip</p>", "not a valid gzip file"),
        (gzip.compress(ARTICLE.encode())[:50], "not a valid gzip file"),  # truncated
        (b"", "not a valid gzip file"),
    ],
)
def test_bad_gzip_is_a_one_line_error(content, message, tmp_path, capsys):
    page = tmp_path / "page.html.gz"
    page.write_bytes(content)
    assert message in _error_of(["prune-html", str(page), "-b", "50"], capsys)


def test_bad_paths_are_one_line_errors(tmp_path, capsys):
    page = tmp_path / "page.html"
    page.write_text(ARTICLE)
    assert "no such file" in _error_of(["prune-html", str(tmp_path / "nope.html"), "-b", "50"], capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no tokenizer in directory" in _error_of(
        ["prune-html", str(page), "-b", "50", "-t", str(empty)], capsys
    )
    assert "does not exist" in _error_of(
        ["prune-html", str(page), "-b", "50", "-t", str(tmp_path / "t.json")], capsys
    )
    garbage = tmp_path / "tokenizer.json"
    garbage.write_text("{not json")
    assert "cannot load tokenizer file" in _error_of(
        ["prune-html", str(page), "-b", "50", "-t", str(garbage)], capsys
    )


@pytest.mark.parametrize(("flag", "value"), [("--budget", "-3"), ("--max-words", "0")])
def test_bad_numbers_are_one_line_errors(flag, value, tmp_path, capsys):
    page = tmp_path / "page.html"
    page.write_text(ARTICLE)
    argv = ["prune-html", str(page), "-b", "50", flag, value]
    assert flag.strip("-").replace("-", "_") in _error_of(argv, capsys)


def test_help_describes_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["prune-html", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in (
        "--query",
        "--budget",
        "--output",
        "--scorer",
        "--tokenizer",
        "--main-content",
        "--keep-hidden",
        "--max-words",
    ):
        assert re.search(rf"{flag}[^-]*?\S+.*?\((default|required)", help_text), flag
    assert "(default: html)" in help_text and "(default: bm25)" in help_text and "(default: 256)" in help_text


@pytest.mark.parametrize(
    "argv",
    [
        ["prune-html", "page.html"],
        ["prune-html", "page.html", "-b", "x"],
        ["prune-html", "-b", "5", "-o", "pdf", "-"],
    ],
)
def test_usage_errors_are_one_line(argv, capsys):
    assert "see --help" in _error_of(argv, capsys)
