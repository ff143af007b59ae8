"""Input that crashed or misled the context pruner: each case is a regression test."""

import re

import pytest
from _context_fixtures import bpe_count

from tokenprune.context import HtmlPruner, clean_html, parse_html
from tokenprune.context.blocks import BlockTree
from tokenprune.context.clean import clean_tree

TWELVE = "one two three four five six seven eight nine ten eleven twelve"


# --- names and characters lxml refuses -------------------------------------------------------------


def test_namespaced_tag_reproducer_prunes_without_error():
    result = HtmlPruner(budget=5, output="text").prune(f"<p><o:p>{TWELVE}</o:p></p>")
    assert result.tokens_after <= 5 and result.text in TWELVE


@pytest.mark.parametrize("tag", ["o:p", "fb:like", "esi:remove", "a:b:c"])
@pytest.mark.parametrize("output", ["html", "markdown", "text"])
def test_namespaced_tags_keep_their_text(tag, output):
    page = f"<p>intro words here.</p><p><{tag}>{TWELVE}</{tag}></p>" * 3
    result = HtmlPruner(budget=80, output=output, tokenizer=bpe_count).prune(page, query="eleven")
    assert "eleven" in result.text and result.tokens_after <= 80
    assert TWELVE in clean_html(page, output="text")


def test_namespaced_names_become_names_lxml_accepts():
    assert clean_html("<p><o:p>one</o:p><fb:like>two</fb:like> <a<div>three</a<div></p>") == (
        "<html><body><p><o-p>one</o-p><fb-like>two</fb-like> <a-div>three</a-div></p></body></html>"
    )


@pytest.mark.parametrize(
    "html",
    [
        "<p>a&#1;b</p>",
        "<p>a&#x1;b</p>",
        "<p>a\ufffeb</p>",
        "<p>a&#xFFFE;b</p>",
        "<p>a&#xffff;b</p>",
        "<p>a\U0001fffeb</p>",
        "<p>a&#xFDD0;b</p>",
        "<p>a\x01b</p>",
        "<p>a\ud800b</p>",
    ],
)
def test_control_characters_and_noncharacters_are_dropped(html):
    assert clean_html(html) == "<html><body><p>ab</p></body></html>"
    assert clean_html(html, output="text") == "ab"


def test_character_references_in_tails_and_kept_attributes():
    html = '<p>x<b>y</b>&#2;z <a href="/a&#3;" title="t&#xfffe;">link</a> <img alt="&#1;pic"></p>'
    assert clean_html(html) == (
        '<html><body><p>x<b>y</b>z <a href="/a" title="t">link</a> <img alt="pic"></p></body></html>'
    )


@pytest.mark.parametrize("output", ["html", "markdown", "text"])
def test_pruning_pages_with_character_references(output):
    page = (
        "<p>Lava &#1;flows&#xfffe; down the <o:p>slope</o:p> of Etna.</p><p title='&#2;'>Ash falls.</p>"
    ) * 20
    result = HtmlPruner(budget=40, output=output, tokenizer=bpe_count).prune(page, query="ash")
    assert 0 < result.tokens_after == bpe_count(result.text) <= 40
    assert "Ash falls" in result.text


def test_every_parsed_tree_can_be_rebuilt_element_by_element():
    root = clean_tree(parse_html("<div><o:p a:b='1' title='&#1;x'>t&#1;</o:p><p x&y='2'>u</p></div>" * 5))
    tree = BlockTree(root, max_words=1)
    assert tree.assemble(set(range(len(tree.blocks)))) is not None
    assert all(tree.container_markup(c) for c in range(len(tree.containers)))


# --- shapes that were quadratic or lost text -------------------------------------------------------


def test_a_start_tag_with_thousands_of_attributes_keeps_what_cleaning_reads():
    many = " ".join(f"data-a{i}='v{i}'" for i in range(3000))
    assert clean_html(f"<p {many} title='kept' class='c'>text</p>") == (
        '<html><body><p title="kept">text</p></body></html>'
    )
    # the attributes that hide an element are still read
    assert clean_html(f"<p>shown</p><p {many} hidden>secret</p>", output="text") == "shown"


def test_a_long_attribute_value_with_many_equals_signs_is_not_an_attribute_list():
    value = "a=b&" * 5000
    escaped = value.replace("&", "&amp;")
    assert (
        clean_html(f"<a href='/x?{value}'>link</a>")
        == f'<html><body><a href="/x?{escaped}">link</a></body></html>'
    )


def test_text_after_a_giant_unsplittable_word_is_kept():
    page = "<p>" + "x" * 2_000_000 + " lava flows.</p><p>The lava reached the sea at night.</p>"
    result = HtmlPruner(budget=50, output="text").prune(page, query="lava sea")
    assert "The lava reached the sea at night." in result.text
    assert 0 < result.tokens_after <= 50


def test_text_without_sentence_ends_is_cut_into_blocks():
    tree = BlockTree(parse_html(f"<p>{TWELVE} {TWELVE}</p>"), max_words=8)
    assert [block.words for block in tree.blocks] == [8, 8, 8]
    assert " ".join(block.text for block in tree.blocks) == f"{TWELVE} {TWELVE}"


def test_a_run_of_abbreviations_is_one_sentence_piece():
    from tokenprune.context.text import split_sentences

    assert split_sentences("A. B. C. D. " * 3 + "Then text.") == ["A. B. C. D. " * 3 + "Then text."]
    assert re.fullmatch(r"(A\. ){20000}", clean_html("<p>" + "A. " * 20000 + "</p>", output="text") + " ")
