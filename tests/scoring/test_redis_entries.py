"""The Redis transport's column-wise paths (no server: entries as redis-py gives them).

Flat entries are parsed, and outputs encoded, a whole micro-batch at a time when
the batch is regular; each must give exactly what the entry-by-entry path gives,
and leave every irregular batch to it."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

import streammix as sm
from streammix.scoring import pipeline
from streammix.scoring.redis import StreamConsumer, _table, flat_batch


@pytest.fixture(scope="module")
def scorer():
    X = np.random.default_rng(0).normal(size=(2000, 3))
    return sm.AnomalyScorer(sm.GaussianMixture(2, random_state=0).fit(X),
                            contamination=0.02).fit(X)


def _entries(rows, *, key=bytes, extra=None, with_id=True):
    def name(text):
        return text.encode() if key is bytes else text

    entries = []
    for i, row in enumerate(rows):
        fields = {name("id"): name(str(i))} if with_id else {}
        fields.update({name(f"x{j}"): name(repr(float(v))) for j, v in enumerate(row)})
        fields.update(extra or {})
        entries.append((name(f"{i}-0"), fields))
    return entries


def _both_ways(scorer, entries, explain=True):
    consumer = StreamConsumer(scorer, None, "in", "g", "c", "out", explain=explain)
    fast = consumer._score(entries)
    slow = [[out] for out in scorer.score_batch(consumer._records(entries), explain=explain)]
    return fast, slow


@pytest.mark.parametrize("key", [bytes, str])
@pytest.mark.parametrize("explain", [True, False])
def test_a_regular_batch_is_parsed_column_wise_as_entry_by_entry(scorer, key, explain):
    rows = np.random.default_rng(1).normal(size=(300, 3)) * 4
    entries = _entries(rows, key=key, extra={key(b"note") if key is bytes else "note":
                                             key(b"text") if key is bytes else "text"})
    assert flat_batch(entries, scorer.feature_names(), "id", 1 << 20) is not None
    fast, slow = _both_ways(scorer, entries, explain)
    assert fast == slow  # same ids (text), same numbers to the bit
    assert [written[0]["id"] for written in fast] == [str(i) for i in range(300)]


def test_entries_without_ids_are_parsed_column_wise(scorer):
    entries = _entries(np.zeros((4, 3)), with_id=False)
    assert flat_batch(entries, scorer.feature_names(), "id", 1 << 20) is not None
    fast, slow = _both_ways(scorer, entries)
    assert fast == slow and all(w[0]["id"] is None for w in fast)


@pytest.mark.parametrize("spoil", [
    lambda e: e[1][1].update({b"x1": b"n/a"}),  # not a number
    lambda e: e[1][1].update({b"x1": b"nan"}),  # not finite
    lambda e: e[1][1].update({b"x1": b"1e999"}),  # beyond the float range
    lambda e: e[1][1].pop(b"x2"),  # a missing field
    lambda e: e[1][1].pop(b"id"),  # an id on some entries only
    lambda e: e[1][1].update({b"pad": b"x" * 5000}),  # longer than the limit
    lambda e: e.__setitem__(1, (b"1-0", {b"data": b'{"id": 7, "x0": 1, "x1": 2, "x2": 3}'})),
    lambda e: e.__setitem__(0, (b"0-0", {b"data": b'{"id": 7, "x0": 1, "x1": 2, "x2": 3}'})),
])
def test_an_irregular_batch_is_left_to_entry_by_entry(scorer, spoil):
    entries = _entries(np.ones((5, 3)))
    spoil(entries)
    assert flat_batch(entries, scorer.feature_names(), "id", 4096) is None
    consumer = StreamConsumer(scorer, None, "in", "g", "c", "out", max_record_bytes=4096)
    outputs = consumer._score(entries)
    assert len(outputs) == 5 and sum("error" in w[0] for w in outputs) <= 1


def _decoded(batch: bytes) -> list[list[list[str]]]:
    """The write script's argument, back as each entry's output field lists (what the
    Lua script writes), from either form."""
    value = orjson.loads(batch)
    if isinstance(value, dict):
        return [[["entry", entry, *[text for key, column in zip(value["keys"],
                                                                  value["columns"],
                                                                  strict=True)
                                    for text in (key, column[i])]]]
                for i, entry in enumerate(value["entries"])]
    return [fields for _, fields in value]


@pytest.mark.parametrize("explain", [True, False])
def test_a_table_of_outputs_writes_the_fields_of_each_output(scorer, explain):
    rows = np.random.default_rng(2).normal(size=(50, 3)) * 30  # some far: huge scores
    entries = _entries(rows)
    consumer = StreamConsumer(scorer, None, "in", "g", "c", "out", explain=explain)
    outputs = consumer._score(entries)
    batch = consumer._encode(entries, outputs)
    assert isinstance(orjson.loads(batch), dict)  # the table form was taken
    expected = [[["entry", f"{i}-0", *pipeline.output_fields(w[0])]] for i, w in
                enumerate(outputs)]
    assert _decoded(batch) == expected


def test_outputs_of_different_forms_are_written_one_by_one(scorer):
    entries = _entries(np.ones((3, 3)))
    entries[1][1][b"x0"] = b"oops"
    consumer = StreamConsumer(scorer, None, "in", "g", "c", "out")
    outputs = consumer._score(entries)
    assert _table(outputs) is None
    assert _table([outputs[0], outputs[0] + outputs[2]]) is None  # an entry with an event
    expected = [[["entry", f"{i}-0", *pipeline.output_fields(w[0])]] for i, w in
                enumerate(outputs)]
    assert _decoded(consumer._encode(entries, outputs)) == expected


@pytest.mark.parametrize("values", [
    [1.5, -2.0, 1e308], [1.5, float("inf")], [float("nan")], [True, False], [None, 0.5],
    [3, -(1 << 63)], ["a", "é"], [["x0", "x1"], []], [1, "a", None, [2]],
])
def test_a_column_of_texts_is_each_values_text(values):
    assert pipeline.field_texts(values) == [pipeline.field_text(v) for v in values]
