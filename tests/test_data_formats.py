"""Training data in every format (``mt5fn.data``): text, TSV with and without a header, JSON lines,
JSON arrays, parquet and ``datasets.save_to_disk`` folders, globs and several files; malformed
records counted and skipped or fatal (``strict``); the truncation summary; supervised packing;
and a stream whose position resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

import mt5fn
from mt5fn.data import (DataError, ExampleStream, Fields, build_examples, pack_pairs, read_records,
                        sentinels_needed, span_corruption)
from spm import spiece_dir

PAIRS = [("hello world", "hallo welt"), ("the house", "das haus"), ("a garden", "ein garten"),
         ("good morning", "guten morgen"), ("thank you", "danke")]
SUP = Fields("supervised")
SPAN = Fields("span")


@pytest.fixture(scope="module")
def tok():
    return mt5fn.Tokenizer.from_pretrained(spiece_dir())


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def _jsonl(path, rows):
    return _write(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def test_tsv_header_detected_forced_or_absent(tmp_path):
    body = "".join(f"{a}\t{b}\n" for a, b in PAIRS)
    headed = _write(tmp_path / "headed.tsv", "input\ttarget\n" + body)
    assert read_records([headed], SUP).items == PAIRS  # the header line is no training example
    langs = _write(tmp_path / "langs.tsv", "en\tde\n" + body)
    fields = Fields("supervised", input_field="en", target_field="de")
    assert read_records([langs], fields).items == PAIRS  # names the configured columns: a header
    swapped = _write(tmp_path / "swapped.tsv", "target\tinput\n" + "".join(f"{b}\t{a}\n" for a, b in PAIRS))
    assert read_records([swapped], SUP).items == PAIRS  # columns chosen by name
    plain = _write(tmp_path / "plain.tsv", body)
    assert read_records([plain], SUP).items == PAIRS
    odd = _write(tmp_path / "odd.tsv", "hello\tworld\n" + body)
    assert read_records([odd], Fields("supervised", tsv_header=True)).items == PAIRS  # forced
    assert read_records([headed], Fields("supervised", tsv_header=False)).items == [("input", "target")] + PAIRS


def test_jsonl_json_and_text(tmp_path):
    rows = [{"input": a, "target": b, "id": i} for i, (a, b) in enumerate(PAIRS)]
    assert read_records([_jsonl(tmp_path / "a.jsonl", rows)], SUP).items == PAIRS
    assert read_records([_write(tmp_path / "a.json", json.dumps(rows))], SUP).items == PAIRS  # a JSON array
    assert read_records([_jsonl(tmp_path / "b.json", rows)], SUP).items == PAIRS  # JSON lines named .json
    custom = [{"src": a, "tgt": b} for a, b in PAIRS]
    fields = Fields("supervised", input_field="src", target_field="tgt")
    assert read_records([_jsonl(tmp_path / "c.jsonl", custom)], fields).items == PAIRS
    texts = [{"text": a + " " + b} for a, b in PAIRS]
    assert read_records([_jsonl(tmp_path / "t.jsonl", texts)], SPAN).items == [t["text"] for t in texts]
    lines = _write(tmp_path / "raw.txt", "".join(f"{a}\n\n" for a, _ in PAIRS))
    assert read_records([lines], SPAN).items == [a for a, _ in PAIRS]  # blank lines are not records
    tabbed = _write(tmp_path / "pairs.txt", "".join(f"{a}\t{b}\n" for a, b in PAIRS))
    assert read_records([tabbed], SUP).items == PAIRS


def test_parquet_and_datasets_folders(tmp_path):
    import datasets
    table = datasets.Dataset.from_dict({"input": [a for a, _ in PAIRS], "target": [b for _, b in PAIRS]})
    table.to_parquet(str(tmp_path / "train.parquet"))
    assert read_records([str(tmp_path / "train.parquet")], SUP).items == PAIRS
    table.save_to_disk(str(tmp_path / "one"))
    assert read_records([str(tmp_path / "one")], SUP).items == PAIRS
    datasets.DatasetDict({"train": table, "validation": table.select([0, 1])}).save_to_disk(str(tmp_path / "dd"))
    assert read_records([str(tmp_path / "dd")], SUP).items == PAIRS  # the train split
    assert read_records([str(tmp_path / "dd")], SUP, split=("validation",)).items == PAIRS[:2]
    datasets.DatasetDict({"dev": table}).save_to_disk(str(tmp_path / "odd"))
    assert read_records([str(tmp_path / "odd")], SUP).items == PAIRS  # a lone split is taken
    datasets.DatasetDict({"a": table, "b": table}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(DataError, match=r"splits \['a', 'b'\]"):
        read_records([str(tmp_path / "two")], SUP)


def test_globs_and_several_files(tmp_path):
    for index, (a, b) in enumerate(PAIRS):
        _jsonl(tmp_path / f"shard-{index:02d}.jsonl", [{"input": a, "target": b}])
    assert read_records([str(tmp_path / "shard-*.jsonl")], SUP).items == PAIRS  # sorted glob
    extra = _write(tmp_path / "extra.tsv", "x\ty\n")
    assert read_records([str(tmp_path / "shard-0[01].jsonl"), extra], SUP).items == PAIRS[:2] + [("x", "y")]
    with pytest.raises(DataError, match="matches no file"):
        read_records([str(tmp_path / "nothing-*.jsonl")], SUP)
    with pytest.raises(DataError, match="no such file"):
        read_records([str(tmp_path / "missing.jsonl")], SUP)


def test_malformed_records_are_counted_and_skipped_or_fatal(tmp_path):
    rows = ['{"input": "a", "target": "b"}', '{"input": "c", "target": ', '{"input": "d"}',
            '{"input": "e", "target": "  "}', '["not", "an", "object"]', '{"input": 5, "target": "x"}',
            '{"input": "f", "target": "g"}']
    path = _write(tmp_path / "bad.jsonl", "\n".join(rows) + "\n")
    records = read_records([path], SUP)
    assert records.items == [("a", "b"), ("f", "g")]
    assert sum(records.skipped.values()) == 5
    summary = records.skip_summary()
    assert "skipped 5 malformed record(s) of 7" in summary and "bad JSON" in summary
    assert "missing field 'target'" in summary and "empty target" in summary and "--strict" in summary
    assert f"{path}:2" in summary  # the first one, by file and line
    with pytest.raises(DataError, match=rf"{path}:2: bad JSON .*--strict"):
        read_records([path], SUP, strict=True)
    tabless = _write(tmp_path / "bad.tsv", "a\tb\njust an input\n")
    with pytest.raises(DataError, match="no TAB"):
        read_records([tabless], SUP, strict=True)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00 not text\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_records([str(binary)], SPAN)
    with pytest.raises(DataError, match="is empty"):
        read_records([_write(tmp_path / "empty.jsonl", "\n \n")], SUP)


def test_truncation_summary_and_warning(tok):
    records = [("one two three four five six seven eight nine ten", "a b"), ("short", "x")]
    limit = len(tok.encode("short"))  # the short input just fits, the long one is cut
    examples = build_examples(records, tok, "supervised", max_input_length=limit, max_target_length=16, seed=0)
    summary = examples.summary
    assert summary.records == 2 and summary.inputs_truncated == 1 and summary.targets_truncated == 0
    assert all(len(inputs) <= limit and int(inputs[-1]) == tok.eos_token_id for inputs, _ in examples.items)
    lines = summary.report(limit, 16)
    assert f"50.0% of inputs at --max-input-length {limit}" in lines[0]
    assert len(lines) == 2 and "raise --max-input-length" in lines[1] and "longest has" in lines[1]
    roomy = build_examples(records, tok, "supervised", max_input_length=64, max_target_length=16, seed=0)
    assert len(roomy.summary.report(64, 16)) == 1  # nothing cut: no warning


def test_prefix_and_packing(tok):
    records = [(a, b) for a, b in PAIRS]
    plain = build_examples(records, tok, "supervised", max_input_length=64, max_target_length=32, seed=0)
    prefixed = build_examples(records, tok, "supervised", max_input_length=64, max_target_length=32, seed=0,
                              prefix="translate English to German: ")
    head = tok.encode("translate English to German: hello world")
    assert prefixed.items[0][0].tolist() == head and plain.items[0][0].tolist() == tok.encode("hello world")
    rows = pack_pairs(plain.items, 24, 24)
    assert sum(len(i) for i, _ in rows) == sum(len(i) for i, _ in plain.items)  # every example kept whole
    assert all(len(i) <= 24 and len(t) <= 24 for i, t in rows) and len(rows) < len(plain.items)
    joined = torch.cat([i for i, _ in rows]).tolist()
    assert joined == torch.cat([i for i, _ in plain.items]).tolist()  # in order


def test_sentinel_bound_is_checked_before_training(tok):
    needed = sentinels_needed(mt5fn.data.compute_input_and_target_lengths(2048)[0])
    assert needed == 114  # the issue's case: mT5's 100 extra ids are too few at 2048 tokens
    with pytest.raises(DataError, match=r"needs 114 sentinels .* only 100 extra ids; lower --max-input-length"):
        build_examples(["a b c"] * 10, tok, "span", max_input_length=2048, max_target_length=512, seed=0)
    assert sentinels_needed(80) == 4
    with pytest.raises(ValueError, match="needs 4 sentinels .* extra_ids=3"):
        span_corruption(torch.arange(2, 82), vocab_size=100, extra_ids=3,
                        generator=torch.Generator().manual_seed(0))


def _stream(paths, tok, mode="supervised", **kw):
    return ExampleStream(paths, Fields(mode), tok, max_input_length=kw.pop("max_input_length", 24),
                         max_target_length=kw.pop("max_target_length", 16), seed=5, **kw)


@pytest.mark.parametrize("mode, pack", [("supervised", False), ("supervised", True), ("span", False)])
def test_stream_resumes_exactly_across_shards_and_epochs(tmp_path, tok, mode, pack):
    texts = [f"{a} and {b} number {n}" for n in range(6) for a, b in PAIRS]
    for shard in range(3):
        rows = [{"input": t, "target": t.split()[0], "text": t} for t in texts[shard::3]]
        _jsonl(tmp_path / f"part-{shard}.jsonl", rows)
    paths = [str(tmp_path / "part-*.jsonl")]
    reference = _stream(paths, tok, mode, pack_examples=pack)
    first = [reference.take(4) for _ in range(3)]
    state = reference.state()
    rest = [reference.take(4) for _ in range(12)]  # well past one epoch
    resumed = _stream(paths, tok, mode, pack_examples=pack)
    resumed.restore(torch.load(_saved(tmp_path, state), weights_only=True))  # as a checkpoint stores it
    again = [resumed.take(4) for _ in range(12)]
    for got, want in zip(again, rest):
        for (gi, gt), (wi, wt) in zip(got, want):
            assert torch.equal(gi, wi) and torch.equal(gt, wt)
    assert reference.state()["epoch"] >= 1 and first


def _saved(tmp_path, state):
    path = tmp_path / "state.pt"
    torch.save(state, path)
    return path


def test_stream_of_parquet_resumes_exactly(tmp_path, tok):
    import datasets
    for shard in range(2):
        rows = PAIRS[shard::2] * 3
        datasets.Dataset.from_dict({"input": [a for a, _ in rows], "target": [b for _, b in rows]}).to_parquet(
            str(tmp_path / f"p{shard}.parquet"))
    paths = [str(tmp_path / "p*.parquet")]
    reference = _stream(paths, tok)
    reference.take(3)
    state = reference.state()
    want = [reference.take(2) for _ in range(5)]
    resumed = _stream(paths, tok)
    resumed.restore(torch.load(_saved(tmp_path, state), weights_only=True))
    got = [resumed.take(2) for _ in range(5)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for x, y in zip(got, want) for a, b in zip(x, y))


def test_stream_shuffle_buffer_permutes_and_resumes_exactly(tmp_path, tok):
    rows = [{"input": f"{a} {n}", "target": b} for n in range(8) for a, b in PAIRS]
    _jsonl(tmp_path / "all.jsonl", rows)
    paths = [str(tmp_path / "all.jsonl")]
    plain = [pair for _ in range(4) for pair in _stream(paths, tok).take(10)][:10]
    mixed = _stream(paths, tok, shuffle_buffer=8)
    first = mixed.take(10)
    assert [p[0].tolist() for p in first] != [p[0].tolist() for p in plain]  # drawn out of order
    state = mixed.state()
    assert len(state["buffer"]) == 7  # topped up to 8 before each draw
    want = [mixed.take(5) for _ in range(10)]  # past the end of the file: the buffer crosses epochs
    again = _stream(paths, tok, shuffle_buffer=8)
    again.restore(torch.load(_saved(tmp_path, state), weights_only=True))
    got = [again.take(5) for _ in range(10)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for x, y in zip(got, want) for a, b in zip(x, y))
    seen = [p[0].tolist() for batch in [first, *want[:6]] for p in batch]  # the first 40 drawn (one epoch)
    window = [p[0].tolist() for p in _stream(paths, tok).take(47)]  # what the buffer can have reached
    from collections import Counter

    drawn, reachable = Counter(map(tuple, seen)), Counter(map(tuple, window))
    assert all(drawn[x] <= reachable[x] for x in drawn)  # nothing twice that the stream had once
