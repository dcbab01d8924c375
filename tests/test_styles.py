"""Prompt styles: A1111 styles.csv reading, {prompt} placement, appending rules, saving."""
from __future__ import annotations

import csv
import os

import pytest

from modules.prompts.styles import PromptStyle, StyleDatabase, merge_prompts


def write(path, text: str, encoding="utf-8"):
    path.write_text(text, encoding=encoding, newline="")
    return path


@pytest.fixture
def db(tmp_path):
    write(tmp_path / "styles.csv",
          "name,prompt,negative_prompt\n"
          "cinematic,\"cinematic still, {prompt}, film grain\",\"cartoon, drawing\"\n"
          "sharp,\"sharp focus, 8k\",blurry\n"
          "empty,,\n"
          "neg only,,\"lowres, bad hands\"\n")
    return StyleDatabase([tmp_path / "styles.csv"])


# ------------------------------------------------------------------ merging (A1111 merge_prompts)

@pytest.mark.parametrize("style, prompt, expected", [
    ("sharp focus", "a cat", "a cat, sharp focus"),
    ("sharp focus", "", "sharp focus"),                         # empty prompt: no leading ", "
    ("", "a cat", "a cat"),                                     # empty style: prompt unchanged
    ("", "  a cat  ", "a cat"),                                 # ... but stripped, as A1111 does
    ("  sharp  ", " a cat ", "a cat, sharp"),
    ("art of {prompt}, detailed", "a cat", "art of a cat, detailed"),
    ("art of {prompt}", "", "art of "),                         # {prompt} is replaced verbatim, even when empty
    ("{prompt} {prompt}", "x", "x x"),                          # every occurrence
    ("a, {prompt}", " spaced ", "a,  spaced "),                 # no stripping with {prompt}
])
def test_merge_prompts_matches_a1111(style, prompt, expected):
    assert merge_prompts(style, prompt) == expected


def test_apply_prompt_placeholder_and_append(db):
    prompt, negative = db.apply("a cat", "ugly", ["cinematic"])
    assert prompt == "cinematic still, a cat, film grain"
    assert negative == "ugly, cartoon, drawing"
    assert db.apply("a cat", "", ["sharp"]) == ("a cat, sharp focus, 8k", "blurry")


def test_apply_several_styles_in_order(db):
    # Each style wraps the result of the ones before it.
    assert db.apply("a cat", "", ["sharp", "cinematic"]) == (
        "cinematic still, a cat, sharp focus, 8k, film grain", "blurry, cartoon, drawing")
    assert db.apply("a cat", "", ["cinematic", "sharp"]) == (
        "cinematic still, a cat, film grain, sharp focus, 8k", "cartoon, drawing, blurry")


def test_apply_empty_and_unknown(db):
    assert db.apply(" a cat ", " bad ", []) == (" a cat ", " bad ")          # no styles: untouched
    assert db.apply("a cat", "bad", ["empty"]) == ("a cat", "bad")
    assert db.apply("", "", ["neg only"]) == ("", "lowres, bad hands")
    assert db.apply(" a cat ", "", ["nope"]) == ("a cat", "")               # unknown = empty style (A1111)
    assert db.unknown(["sharp", "nope", "cinematic", "also nope"]) == ["nope", "also nope"]
    assert db.unknown([]) == []


# ------------------------------------------------------------------ reading

def test_quoted_fields_with_commas_newlines_and_quotes(tmp_path):
    path = write(tmp_path / "styles.csv",
                 'name,prompt,negative_prompt\n'
                 '"multi, line","first line\nsecond, line","say ""hi"""\n')
    style = StyleDatabase([path]).get("multi, line")
    assert style == PromptStyle("multi, line", "first line\nsecond, line", 'say "hi"', path)


def test_malformed_rows_are_skipped(tmp_path):
    path = write(tmp_path / "styles.csv",
                 "name,prompt,negative_prompt\n"
                 "good,a,b\n"
                 "\n"                               # blank line
                 ",no name,x\n"                     # empty name
                 "# comment,ignored,x\n"            # A1111: names starting with # are comments
                 "only name\n"                      # no prompt column at all
                 "short,just prompt\n"              # negative missing: empty
                 "long,p,n,extra,columns\n"         # extra columns ignored
                 "good2,c,d\n")
    db = StyleDatabase([path])
    assert db.names() == ["good", "short", "long", "good2"]
    assert db.get("short") == PromptStyle("short", "just prompt", "", path)
    assert db.get("long").negative_prompt == "n"


def test_damaged_or_missing_files_never_crash(tmp_path):
    assert StyleDatabase([tmp_path / "missing.csv"]).names() == []
    write(tmp_path / "noheader.csv", "just some text\nmore\n")
    assert StyleDatabase([tmp_path / "noheader.csv"]).names() == []
    (tmp_path / "binary.csv").write_bytes(b"name,prompt\nok,fine\nbad,\x00\xff\xfe\"unterminated")
    assert "ok" in StyleDatabase([tmp_path / "binary.csv"]).names()
    (tmp_path / "dir.csv").mkdir()
    assert StyleDatabase([tmp_path / "dir.csv"]).names() == []
    write(tmp_path / "empty.csv", "")
    assert StyleDatabase([tmp_path / "empty.csv"]).names() == []


def test_old_text_header_bom_and_spaces(tmp_path):
    # Old A1111 files: "name, text" (with a space after the comma, hence skipinitialspace); Excel adds a BOM.
    path = tmp_path / "styles.csv"
    path.write_bytes("\ufeffname, text\nold, \"from, old file\"\n".encode("utf-8"))
    db = StyleDatabase([path])
    assert db.get("old") == PromptStyle("old", "from, old file", "", path)


def test_multiple_files_and_wildcards(tmp_path):
    write(tmp_path / "styles.csv", "name,prompt,negative_prompt\na,from main,\nshared,main,\n")
    write(tmp_path / "styles-extra.csv", "name,prompt,negative_prompt\nb,from extra,\nshared,extra,\n")
    db = StyleDatabase([tmp_path / "styles.csv", tmp_path / "styles-extra.csv"])
    assert db.names() == ["a", "shared", "b"]
    assert db.get("shared").prompt == "extra"                    # a later file wins
    assert db.get("b").path == tmp_path / "styles-extra.csv"

    wild = StyleDatabase([tmp_path / "styles*.csv"])
    assert set(wild.names()) == {"a", "b", "shared"}
    assert wild.default_path == tmp_path / "styles-extra.csv"    # the first match (sorted) takes new styles


def test_reload_sees_file_changes(tmp_path, db):
    write(tmp_path / "styles.csv", "name,prompt,negative_prompt\nnew,x,y\n")
    assert "new" not in db.names()
    db.reload()
    assert db.names() == ["new"]


# ------------------------------------------------------------------ saving

def read_rows(path):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle))


def test_save_and_delete_round_trip(tmp_path, db):
    path = tmp_path / "styles.csv"
    tricky = PromptStyle("new, style", "line1\nline2, {prompt}", 'a "quoted" word')
    stored = db.save(tricky)
    assert stored.path == path
    rows = read_rows(path)
    assert rows[0] == ["name", "prompt", "negative_prompt"]          # A1111 column order
    assert rows[-1] == ["new, style", "line1\nline2, {prompt}", 'a "quoted" word']
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")             # utf-8-sig, as A1111 writes
    assert (tmp_path / "styles.csv.bak").exists()                    # A1111 keeps the previous file

    fresh = StyleDatabase([path])
    assert fresh.names() == db.names()
    assert fresh.get("new, style") == stored
    assert fresh.get("cinematic") == db.get("cinematic")

    db.save(PromptStyle("sharp", "sharper", ""))                     # replace keeps the position
    assert StyleDatabase([path]).names() == ["cinematic", "sharp", "empty", "neg only", "new, style"]
    assert StyleDatabase([path]).get("sharp").prompt == "sharper"

    assert db.delete("cinematic") is True
    assert db.delete("cinematic") is False
    assert "cinematic" not in StyleDatabase([path]).names()
    assert sorted(os.listdir(tmp_path)) == ["styles.csv", "styles.csv.bak"]   # no temp files left behind


def test_save_creates_missing_file_and_keeps_other_files(tmp_path):
    write(tmp_path / "extra.csv", "name,prompt,negative_prompt\nx,from extra,\n")
    db = StyleDatabase([tmp_path / "data" / "styles.csv", tmp_path / "extra.csv"])
    db.save(PromptStyle("mine", "p", "n"))
    assert read_rows(tmp_path / "data" / "styles.csv") == [["name", "prompt", "negative_prompt"], ["mine", "p", "n"]]
    db.save(PromptStyle("x", "edited", ""))                           # stays in the file it came from
    assert read_rows(tmp_path / "extra.csv")[-1] == ["x", "edited", ""]
    assert [r[0] for r in read_rows(tmp_path / "data" / "styles.csv")] == ["name", "mine"]


def test_failed_write_leaves_file_and_memory_untouched(tmp_path, db, monkeypatch):
    path = tmp_path / "styles.csv"
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("modules.prompts.styles.os.replace", boom)
    with pytest.raises(OSError):
        db.save(PromptStyle("new", "p", "n"))
    with pytest.raises(OSError):
        db.delete("sharp")
    assert path.read_bytes() == before
    assert "new" not in db.names() and "sharp" in db.names()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_save_rejects_bad_names(db):
    with pytest.raises(ValueError):
        db.save(PromptStyle("", "p", "n"))
    with pytest.raises(ValueError):
        db.save(PromptStyle("#hidden", "p", "n"))


# ------------------------------------------------------------------ API and infotext

def test_api_list_shape(db):
    listed = db.api_list()
    assert listed[0] == {"name": "cinematic", "prompt": "cinematic still, {prompt}, film grain",
                         "negative_prompt": "cartoon, drawing"}
    assert [set(item) for item in listed] == [{"name", "prompt", "negative_prompt"}] * 4


def test_extract_undoes_apply(db):
    styled = db.apply("a cat", "ugly", ["sharp", "cinematic"])
    assert db.extract(*styled) == ("a cat", "ugly", ["sharp", "cinematic"])
    assert db.extract("a dog", "bad") == ("a dog", "bad", [])
    # A style matches only if both its prompt and its negative prompt are there.
    assert db.extract("a cat, sharp focus, 8k", "nothing")[2] == []
