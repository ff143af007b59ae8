"""Corpus pruning on Ray Data (extra `ray`): `BatchPruner` in `map_batches` on a local Ray instance
gives every page what `HtmlPruner` gives it alone."""

import json

import pytest
import ray
from _context_fixtures import ARTICLE

from tokenprune.context import HtmlPruner
from tokenprune.context.batch import BatchPruner

PAGES = [
    (f"page-{i}", html, query)
    for i, (html, query) in enumerate(
        [
            (ARTICLE, "vineyards grapes"),
            (ARTICLE, None),
            (
                "<h1>Bridge</h1><p>The restoration cost 3.8 million pounds.</p><p>Work took a year.</p>",
                "cost",
            ),
            ("<p>only</p>", "anything"),
            ("", None),
        ]
    )
]


@pytest.fixture(scope="module")
def local_ray():
    # logical CPUs: two pruning actors plus the read task (four slots, whatever the machine has)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 1024**2)
    yield
    ray.shutdown()


def test_map_batches_with_batch_pruner_prunes_every_page_as_alone(local_ray, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "html": h, "query": q}) + "\n" for i, h, q in PAGES))
    pruned = (
        ray.data.read_json(str(corpus))
        .map_batches(
            BatchPruner,
            fn_constructor_kwargs={"budget": 40, "output": "markdown", "count_raw": True},
            compute=ray.data.ActorPoolStrategy(size=2),
            batch_size=2,
        )
        .drop_columns(["html"])
        .take_all()
    )
    assert sorted(row["id"] for row in pruned) == [page_id for page_id, _, _ in PAGES]
    reference = HtmlPruner(budget=40, output="markdown")
    by_id = {row["id"]: row for row in pruned}
    for page_id, html, query in PAGES:
        result = reference.prune(html, query=query)
        row = by_id[page_id]
        assert row["error"] is None
        assert (row["text"], row["tokens_before"], row["tokens_after"]) == (
            result.text,
            result.tokens_before,
            result.tokens_after,
        )
        assert row["tokens_after"] <= 40
