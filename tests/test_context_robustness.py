"""Input that crashed or misled the context pruner: each case is a regression test."""

import re

import pytest
from _context_fixtures import bpe_count

from tokenprune.context import HtmlPruner, PassagePruner, clean_html, parse_html
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


@pytest.mark.parametrize("name", ["src", "data-x", "class", "title", "style"])
@pytest.mark.parametrize("rest", ["", " hidden", " title='t'", " style='display:none'"])
@pytest.mark.parametrize("value", ["x" * 20_000, "a b=c " * 4000, "x" * 9000 + ">" + "y" * 9000])
def test_a_long_attribute_value_cleans_as_a_short_one(name, rest, value):
    # Long start tags are cut to the attributes cleaning reads before parsing: the result is the same.
    page = f"<p>before</p><img alt='pic' {name}='{value}'{rest}><p>lava</p>"
    short = page.replace(value, "v")
    expected_html = clean_html(short)
    if name in ("title", "style"):  # kept or read: the value itself shows
        expected_html = expected_html.replace('="v"', f'="{value}"'.replace(">", "&gt;"))
    assert clean_html(page) == expected_html
    assert clean_html(page, output="text") == clean_html(short, output="text")
    result = HtmlPruner(budget=5, output="text").prune(page, query="lava")
    assert result.text == HtmlPruner(budget=5, output="text").prune(short, query="lava").text


def test_one_element_with_100000_attributes():
    page = "<div " + " ".join(f"a{i}='v'" for i in range(100_000)) + " title='t'>lava text</div><p>after</p>"
    assert clean_html(page) == '<html><body><div title="t">lava text</div><p>after</p></body></html>'
    result = HtmlPruner(budget=5, output="text").prune(page, query="lava")
    assert result.text == "lava text\n\nafter"


@pytest.mark.slow
def test_text_after_a_giant_unsplittable_word_is_kept():
    page = "<p>" + "x" * 20_000_000 + " lava flows.</p><p>The lava reached the sea at night.</p>"
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


# --- arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [float("nan"), 5, -0.1, 1.5, float("inf")])
def test_threshold_outside_0_1_is_a_value_error(threshold):
    with pytest.raises(ValueError, match="threshold must be in"):
        HtmlPruner(budget=10, threshold=threshold)
    with pytest.raises(ValueError, match="threshold must be in"):
        PassagePruner(budget=10, threshold=threshold)


@pytest.mark.parametrize("threshold", ["x", None, True, [0.5]])
def test_threshold_of_another_type_is_a_type_error(threshold):
    with pytest.raises(TypeError, match="threshold must be a number"):
        HtmlPruner(budget=10, threshold=threshold)
    with pytest.raises(TypeError, match="threshold must be a number"):
        PassagePruner(budget=10, threshold=threshold)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"max_words": 0}, ValueError, "max_words"),
        ({"max_words": 2.5}, TypeError, "max_words"),
        ({"max_words": "9"}, TypeError, "max_words"),
        ({"main_content": "yes"}, TypeError, "main_content"),
        ({"keep_hidden": 1}, TypeError, "keep_hidden"),
    ],
)
def test_other_bad_arguments_fail_at_construction(arguments, error, message):
    with pytest.raises(error, match=message):
        HtmlPruner(budget=10, **arguments)


def test_clean_html_checks_its_flags():
    with pytest.raises(TypeError, match="keep_hidden"):
        clean_html("<p>x</p>", keep_hidden="no")


def test_threshold_keeps_working_at_its_bounds():
    page = "<p>Lava flows at night.</p><p>Ash closes the airport.</p>" * 30
    assert "Ash" in HtmlPruner(budget=30, threshold=1, output="text").prune(page, query="ash").text
    assert HtmlPruner(budget=30, threshold=0.0, output="text").prune(page, query="ash").tokens_after > 20


# --- lossless: noscript, hidden and template content -----------------------------------------------

ARTICLE_TEXT = " ".join(f"Sentence {i} of the article tells how the lava reached the sea." for i in range(20))


def test_an_article_inside_noscript_is_the_content():
    page = f"<html><head><title>Title</title></head><body><noscript><p>{ARTICLE_TEXT}</p></noscript></body></html>"
    assert clean_html(page, output="text") == f"Title\n\n{ARTICLE_TEXT}"


def test_a_noscript_notice_on_a_page_with_content_is_dropped():
    page = f"<body><noscript><p>Please enable JavaScript.</p></noscript><p>{ARTICLE_TEXT}</p></body>"
    assert clean_html(page, output="text") == ARTICLE_TEXT


@pytest.mark.parametrize(
    "template",
    [
        "<template><h2>Post</h2><p>{}</p></template>",
        '<script type="text/template"><h2>Post</h2><p>{}</p></script>',
        '<script type="text/x-handlebars-template"><h2>Post</h2><p>{}</p></script>',
        '<script type="text/html"><h2>Post</h2><p>{}</p></script>',
    ],
)
def test_a_post_inside_a_template_is_the_content(template):
    page = "<body><nav><a href='/'>Home</a></nav>" + template.format(ARTICLE_TEXT) + "<p>Footer</p></body>"
    assert clean_html(page, output="markdown") == f"[Home](/)\n\n## Post\n\n{ARTICLE_TEXT}\n\nFooter"


def test_scripts_and_small_templates_stay_dropped():
    page = (
        f"<p>{ARTICLE_TEXT}</p><script>var words = 'many words in a script ' * 100;</script>"
        "<script type='text/template'><p>{{title}} by {{author}}</p></script><template><p>Row</p></template>"
    )
    assert clean_html(page, output="text") == ARTICLE_TEXT
    assert clean_html(f"<p>x</p><script>{ARTICLE_TEXT}</script>", output="text") == "x"


def test_hidden_content_is_an_option():
    page = "<p>Gallery</p><div style='display:none'><p>Slide two: the crater at dawn.</p></div>"
    assert clean_html(page, output="text") == "Gallery"
    assert clean_html(page, output="text", keep_hidden=True) == "Gallery\n\nSlide two: the crater at dawn."
    result = HtmlPruner(budget=30, output="text", keep_hidden=True).prune(page * 5, query="crater dawn")
    assert "crater at dawn" in result.text and result.tokens_after <= 30


# --- encodings: declared charsets that lie -----------------------------------------------------------

FRENCH = "Le café crème brûlée est très apprécié à Noël, où l’on déguste aussi des crêpes."
RUSSIAN = (
    "Москва - столица России, крупнейший город страны. "
    "Город расположен на реке Москве в центре Восточно-Европейской равнины. "
) * 3
CHINESE = "中华人民共和国的首都是北京。北京是中国的政治、文化和国际交往中心，有着三千多年的建城史。" * 3


@pytest.mark.parametrize(
    ("declared", "text", "encoding"),
    [
        ("utf-16", FRENCH, "cp1252"),  # decodes, into CJK garbage: a declaration in ASCII cannot be UTF-16
        ("utf-8", FRENCH, "cp1252"),  # cannot decode the bytes
        ("shift_jis", FRENCH, "cp1252"),  # cannot decode the bytes
        ("klingon", FRENCH, "cp1252"),  # no such charset
        ("windows-1252", RUSSIAN, "koi8-r"),  # decodes, into mojibake
        ("iso-8859-1", CHINESE, "gbk"),  # decodes, into mojibake
        ("utf-16", CHINESE, "gbk"),
        ("utf-32le", RUSSIAN, "cp1251"),
    ],
)
def test_a_lying_charset_falls_back_to_detection(declared, text, encoding):
    page = f'<html><head><meta charset="{declared}"></head><body><p>{text}</p></body></html>'
    assert clean_html(page.encode(encoding), output="text") == text.strip()


@pytest.mark.parametrize(("text", "encoding"), [(RUSSIAN, "koi8-r"), (CHINESE, "gbk"), (FRENCH, "cp1252")])
def test_undeclared_charsets_are_detected(text, encoding):
    assert clean_html(f"<p>{text}</p>".encode(encoding), output="text") == text.strip()


@pytest.mark.parametrize(
    ("text", "encoding"), [(RUSSIAN, "koi8-r"), (CHINESE, "gb2312"), (FRENCH.replace("’", "'"), "latin-1")]
)
def test_a_truthful_charset_is_used(text, encoding):
    page = f'<meta http-equiv="Content-Type" content="text/html; charset={encoding}"><p>{text}</p>'
    assert clean_html(page.encode(encoding), output="text") == text.strip()
