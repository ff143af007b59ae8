"""Main-content selection on the block tree: trafilatura's extraction corrected by page signals."""

import pytest

from tokenprune.context.blocks import BlockTree
from tokenprune.context.clean import clean_tree, parse_html
from tokenprune.context.main_content import BLOCK_WORDS, select_blocks

FIRST = [
    "The council approved the new budget for the harbour district on Monday evening after a long debate.",
    "Members argued for three hours about the cost of dredging the old channel near the ferry terminal.",
]
SECOND = [
    "Dredging will start in spring and should take about eight months according to the port authority.",
    "Local fishermen welcomed the decision because the channel has silted up badly over the last decade.",
]
PAGE = f"""<html><body>
<nav><a href="/">Home</a> <a href="/news">News</a></nav>
<main><article>
<p class="dateline">Updated 10:01 pm, Tuesday</p>
<div class="body"><p>{FIRST[0]}</p><p>{FIRST[1]}</p></div>
<div class="ad">Advertisement</div>
<div class="body"><p>{SECOND[0]}</p><p>{SECOND[1]}</p></div>
<p><a href="/a">Read more: harbour festival draws record crowds to the old town this year</a></p>
</article></main>
<aside><p>Sign up for our newsletter to get the best stories of the week in your inbox.</p></aside>
</body></html>"""


ARTICLE = " ".join(FIRST + SECOND)


def selected_texts(extracted: str) -> str | None:
    tree = BlockTree(clean_tree(parse_html(PAGE)), max_words=BLOCK_WORDS)
    kept = select_blocks(tree, extracted)
    return None if kept is None else " ".join(tree.blocks[block].text for block in sorted(kept))


def test_extraction_is_mapped_onto_the_page_blocks():
    assert selected_texts(ARTICLE) == ARTICLE


def test_link_dense_blocks_go_even_when_extracted():
    extracted = " ".join(
        [*FIRST, *SECOND, "Read more: harbour festival draws record crowds to the old town this year"]
    )
    assert selected_texts(extracted) == ARTICLE


def test_paragraphs_of_the_same_shape_come_back():
    # The extractor took the first of two containers the article is split into (around an ad).
    assert selected_texts(" ".join(FIRST)) == ARTICLE


def test_short_lines_before_the_first_paragraph_go():
    assert selected_texts("Updated 10:01 pm, Tuesday " + ARTICLE) == ARTICLE


def test_an_extraction_not_on_the_page_is_refused():
    assert selected_texts("Completely different words that appear nowhere on this page at all.") is None


def test_clean_html_main_content_keeps_the_page_elements():
    pytest.importorskip("trafilatura")
    from tokenprune.context import clean_html

    html = clean_html(PAGE, main_content=True)
    assert "<nav>" not in html and "newsletter" not in html and "Read more" not in html
    assert all(sentence in html for sentence in FIRST + SECOND)
    assert '<div class="body">' not in html  # attributes are cleaned as in lossless mode
