"""PassagePruner: Provence-style sentence selection across passages under one budget."""

import pytest
from _context_fixtures import bpe_count, hf_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenprune.context import PassagePruner, split_sentences
from tokenprune.context.text import sentence_pieces

PASSAGES = [
    ("Cats", "Cats sleep up to sixteen hours a day. They are crepuscular hunters. Kittens sleep even more."),
    "The stock market closed higher on Friday. Bond yields were flat.",
    ("Dogs", "Dogs need daily walks. Some breeds sleep twelve hours a day."),
]


def test_keeps_relevant_sentences_in_order_with_titles():
    result = PassagePruner(budget=100, tokenizer=hf_tokenizer()).prune(
        "How many hours do cats sleep a day?", PASSAGES
    )
    assert result.passages[0].startswith("Cats\nCats sleep up to sixteen hours a day.")
    assert "stock" not in result.text  # nothing relevant: passage dropped
    assert result.passages[1] == ""
    kept = [(k.passage, k.sentence) for k in result.kept]
    assert kept == sorted(kept)
    assert result.tokens_after == len(hf_tokenizer().encode(result.text, add_special_tokens=False)) <= 100


def test_threshold_one_keeps_only_the_best_sentence():
    result = PassagePruner(budget=100, threshold=1.0, tokenizer=bpe_count, keep_titles=False).prune(
        "stock market", PASSAGES
    )
    assert result.text == "The stock market closed higher on Friday."


def test_budget_is_shared_by_all_passages():
    for budget in (1, 5, 12, 25):
        result = PassagePruner(budget=budget, threshold=0.0, tokenizer=bpe_count).prune(
            "sleep hours", PASSAGES
        )
        assert bpe_count(result.text) == result.tokens_after <= budget


def test_near_duplicate_passages_are_dropped():
    copy = "Cats sleep up to sixteen hours a day. They are crepuscular hunters. Kittens sleep even more!"
    result = PassagePruner(budget=200, tokenizer=bpe_count).prune("cats sleep", [PASSAGES[0][1], copy])
    assert result.duplicates == [1]
    assert result.passages[1] == ""


def test_no_query_keeps_passages_from_the_start():
    result = PassagePruner(budget=40, tokenizer=bpe_count, keep_titles=False).prune(None, PASSAGES)
    assert result.text.startswith("Cats sleep up to sixteen hours a day.")


def test_sentence_splitter():
    text = 'Dr. Smith arrived at 5 p.m. on Monday. He said: "Yes!" Then left… Finally, e.g. here.\nNew line'
    assert split_sentences(text) == [
        "Dr. Smith arrived at 5 p.m. on Monday.",
        'He said: "Yes!"',
        "Then left…",
        "Finally, e.g. here.",
        "New line",
    ]


def test_sentence_splitter_in_other_scripts():
    text = (
        "Какую кухню любите? Есть ли блюда. 반응 때문이었을까. 류화영은 입장을. 中文句子。第二句！ok. lower"
    )
    assert split_sentences(text) == [
        "Какую кухню любите?",
        "Есть ли блюда.",
        "반응 때문이었을까.",
        "류화영은 입장을.",
        "中文句子。",
        "第二句！",
        "ok. lower",
    ]


@pytest.mark.parametrize("max_words", [1, 3, 8, 100])
def test_sentence_pieces_concatenate_to_the_text(max_words):
    text = "  Dr. Smith came home. It was  late!  Then a long sentence with many words in it\nNext line  "
    pieces = sentence_pieces(text, max_words)
    assert "".join(piece for piece, _ in pieces) == text
    assert all(len(piece.split()) <= max_words for piece, _ in pieces)
    assert [piece.split()[-1] for piece, ends in pieces if ends] == ["home.", "late!", "it"]
    if max_words == 100:
        assert pieces == [
            ("  Dr. Smith came home. ", True),
            ("It was  late!  ", True),
            ("Then a long sentence with many words in it\n", True),
            ("Next line  ", False),
        ]


@pytest.mark.parametrize(
    ("passages", "error"),
    [
        ("one string", TypeError),
        ([1, 2], TypeError),
        ([("t", "x", "y")], TypeError),
        ([(None, 3)], TypeError),
    ],
)
def test_bad_passages(passages, error):
    with pytest.raises(error, match="passage"):
        PassagePruner(budget=10).prune("q", passages)


def test_bad_settings():
    with pytest.raises(ValueError, match="threshold"):
        PassagePruner(budget=10, threshold=1.5)
    with pytest.raises(ValueError, match="budget"):
        PassagePruner(budget=0)


def test_empty_inputs():
    assert PassagePruner(budget=10).prune("q", []).text == ""
    result = PassagePruner(budget=10).prune("q", ["", "   "])
    assert result.text == "" and result.passages == ["", ""]


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.text(alphabet="abc .!?\nXY", max_size=80), max_size=6),
    st.integers(1, 40),
    st.floats(0, 1),
)
def test_random_passages_never_exceed_the_budget(passages, budget, threshold):
    result = PassagePruner(budget=budget, threshold=threshold, tokenizer=bpe_count).prune("ab X", passages)
    assert bpe_count(result.text) == result.tokens_after <= budget
