"""The ReAct Wikipedia tool: Search/Lookup semantics, the offline corpus and its import, the live cache."""
import ast
import logging
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import wikipedia

from prompts.wiki import (
    NO_MORE_RESULTS,
    NO_PAGE,
    LiveWikipedia,
    OfflineCorpus,
    Page,
    WikiTool,
    import_corpus,
    split_sentences,
    strip_wiki_markup,
)

FIXTURES = Path(__file__).parent / "fixtures"
JSONL = FIXTURES / "wiki_small.jsonl"
XML = FIXTURES / "wiki_small.xml"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any real HTTP request from these tests is a bug."""
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")
    monkeypatch.setattr(requests.Session, "request", refuse)
    monkeypatch.setattr(requests, "get", refuse)


@pytest.fixture(scope="module")
def corpus_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("wiki") / "corpus.db"
    assert import_corpus(JSONL, db) == 10
    assert import_corpus(XML, db) == 2
    return db


@pytest.fixture
def tool(corpus_db) -> WikiTool:
    return WikiTool(OfflineCorpus(corpus_db))


# --- Search ----------------------------------------------------------------------------------

def test_search_returns_the_first_five_sentences(tool):
    obs = tool.search("Marenhold")
    assert obs.startswith("Marenhold is the capital and largest city of Veltria. It lies on the Sella River")
    assert obs.endswith("It has a population of roughly 610,000.")
    assert len(split_sentences(obs)) == 5
    assert "UNESCO" not in obs  # the sixth sentence
    assert tool.page.title == "Marenhold"


def test_search_of_a_short_page_returns_all_of_it(tool):
    assert tool.search("Sella River") == (
        "The Sella River is a river in Central Europe, a tributary of the Danube. It rises in the Gorva "
        "Mountains and flows through Veltria for 212 km. The largest city on the Sella River is Marenhold.")


def test_search_sentence_count_is_configurable(corpus_db):
    assert WikiTool(OfflineCorpus(corpus_db), sentences=1).search("Veltria") == \
        "Veltria is a landlocked country in Central Europe."


@pytest.mark.parametrize("entity", ["ilse varga", "ILSE VARGA", "  Ilse Varga ", "Ilse_Varga", "Ilse  varga"])
def test_search_matches_the_title_ignoring_case_and_spacing(tool, entity):
    assert tool.search(entity).startswith("Ilse Varga (born 14 March 1978) is a Veltrian singer")
    assert tool.page.title == "Ilse Varga"


def test_search_prefers_the_exact_case_when_titles_differ_only_in_case(tmp_path):
    source = tmp_path / "case.jsonl"
    source.write_text('{"title": "Red Hot", "text": "A band."}\n{"title": "Red hot", "text": "A colour."}\n')
    import_corpus(source, tmp_path / "c.db")
    corpus = OfflineCorpus(tmp_path / "c.db")
    assert corpus.page("Red hot").text == "A colour."
    assert corpus.page("Red Hot").text == "A band."


def test_search_not_found_lists_similar_titles_from_fts(tool):
    obs = tool.search("Copper Lantern")
    assert obs.startswith("Could not find Copper Lantern. Similar: ['The Copper Lanterns'")
    similar = ast.literal_eval(obs.removeprefix("Could not find Copper Lantern. Similar: ").removesuffix("."))
    assert isinstance(similar, list) and 1 <= len(similar) <= 5
    assert tool.page is None


def test_similar_titles_are_capped_at_five(tool):
    obs = tool.search("Veltrian Marenhold")
    similar = ast.literal_eval(obs.split("Similar: ", 1)[1].removesuffix("."))
    assert len(similar) == 5


def test_similar_titles_rank_title_hits_first(corpus_db):
    assert OfflineCorpus(corpus_db).similar("Kettering", 3)[0] == "Anton Kettering"


def test_similar_finds_a_misspelt_title_by_trigrams(corpus_db):
    assert OfflineCorpus(corpus_db).similar("Marenholt")[0] == "Marenhold"


def test_search_with_nothing_similar(tool):
    assert tool.search("Zzyzx") == "Could not find Zzyzx. Similar: []."


@pytest.mark.parametrize("entity", ['"quoted" AND (', "NEAR(x y)", "*", "title:"])
def test_fts_syntax_in_the_entity_is_harmless(tool, entity):
    assert tool.search(entity).startswith(f"Could not find {entity.strip()}. Similar: [")


def test_empty_search(tool):
    assert "Search[" in tool.search("   ")


def test_failed_search_keeps_the_current_page(tool):
    tool.search("Dunavec")
    tool.search("Nowhere at all")
    assert tool.page.title == "Dunavec"
    assert tool.lookup("Brell").startswith("(Result 1 / 1)")


# --- Lookup ----------------------------------------------------------------------------------

def test_lookup_returns_matching_sentences_one_at_a_time(tool):
    tool.search("Ilse Varga")
    assert tool.lookup("born") == "(Result 1 / 3) Ilse Varga (born 14 March 1978) is a Veltrian singer and songwriter."
    assert tool.lookup("born") == "(Result 2 / 3) She was born in Marenhold, Veltria."
    assert tool.lookup("born") == ("(Result 3 / 3) Varga was born to a family of musicians; "
                                   "her mother was the pianist Elena Varga.")
    assert tool.lookup("born") == NO_MORE_RESULTS == "No more results."
    assert tool.lookup("born") == NO_MORE_RESULTS


def test_lookup_searches_the_whole_page_not_just_the_summary(tool):
    tool.search("Marenhold")
    assert tool.lookup("UNESCO") == ("(Result 1 / 1) Marenhold is known for its copper-roofed old town, "
                                     "a UNESCO World Heritage Site since 1995.")


def test_lookup_is_case_insensitive(tool):
    tool.search("Ilse Varga")
    assert tool.lookup("SOLO ALBUM") == "(Result 1 / 1) In 2012 she released her first solo album, Northern Glass."


def test_a_new_keyword_restarts_the_count(tool):
    tool.search("Ilse Varga")
    tool.lookup("born")
    tool.lookup("born")
    assert tool.lookup("Marenhold").startswith("(Result 1 / 2) She was born in Marenhold")
    assert tool.lookup("born").startswith("(Result 1 / 3)")


def test_a_new_search_resets_lookup(tool):
    tool.search("Ilse Varga")
    tool.lookup("Marenhold")
    tool.search("Anton Kettering")
    assert tool.lookup("Marenhold") == ("(Result 1 / 1) He was born in Marenhold and studied at the "
                                        "University of Marenhold.")


def test_searching_the_same_page_again_resets_lookup(tool):
    tool.search("Ilse Varga")
    tool.lookup("born")
    tool.search("Ilse Varga")
    assert tool.lookup("born").startswith("(Result 1 / 3)")


def test_lookup_without_a_page(tool):
    assert tool.lookup("born") == NO_PAGE
    assert "Search[" in NO_PAGE


def test_lookup_of_a_missing_keyword(tool):
    tool.search("Dunavec")
    assert tool.lookup("volcano") == "No more results."
    assert tool.lookup("") == "No more results."


def test_reset_forgets_the_page(tool):
    tool.search("Dunavec")
    tool.reset()
    assert tool.page is None
    assert tool.lookup("Sella") == NO_PAGE


def test_multi_hop_question_over_the_fixture(tool):
    """Which country is the birthplace of The Copper Lanterns' guitarist in?"""
    tool.search("The Copper Lanterns")
    assert "Tomas Brell (guitar)" in tool.lookup("guitar")
    assert "He was born in Dunavec, Veltria." in tool.search("Tomas Brell")
    assert "Dunavec is a town in eastern Veltria" in tool.search("Dunavec")


# --- sentences -------------------------------------------------------------------------------

def test_sentence_splitter():
    text = ("Harbor Lights reached No. 1 in 2003. It sold 4.2 million copies! Was it a hit? Yes.\n"
            "J. R. R. Tolkien liked it, e.g. in a letter. The U.S. Army did not. Dr. Osk said \"Fine.\" Then left")
    assert split_sentences(text) == [
        "Harbor Lights reached No. 1 in 2003.", "It sold 4.2 million copies!", "Was it a hit?", "Yes.",
        "J. R. R. Tolkien liked it, e.g. in a letter.", "The U.S. Army did not.", "Dr. Osk said \"Fine.\"",
        "Then left"]


def test_sentence_splitter_edge_cases():
    assert split_sentences("") == []
    assert split_sentences("\n\n  \n") == []
    assert split_sentences("one line\nsecond line") == ["one line", "second line"]
    lower = "lower case. after a period stays together."
    assert split_sentences(lower) == [lower]


# --- import ----------------------------------------------------------------------------------

def test_xml_import_strips_markup(corpus_db):
    corpus = OfflineCorpus(corpus_db)
    text = corpus.page("Gorva Mountains").text
    assert text.startswith("The Gorva Mountains are a mountain range in Veltria. "
                           "The Sella rises on their northern slopes.")
    assert "Their highest peak is Mount Orlec, at 2,408 m." in text
    assert "See the survey map for details." in text
    for markup in ("[[", "]]", "{{", "}}", "'''", "''", "<ref", "cite book", "Infobox", "==", "Geology",
                   "Category:", "thumb", "panorama", "needs a source", "https://", "&nbsp;"):
        assert markup not in text, markup
    assert corpus.page("Pavel Osk") == Page("Pavel Osk", "Pavel Osk (born 1980) is a Veltrian drummer. He is the "
                                                         "drummer of The Copper Lanterns.\nHe grew up in Marenhold.")


def test_xml_import_skips_redirects_and_other_namespaces(corpus_db):
    corpus = OfflineCorpus(corpus_db)
    assert corpus.page("Gorva") is None
    assert corpus.page("Talk:Pavel Osk") is None


def test_xml_without_namespace_and_compressed(tmp_path):
    import bz2

    source = tmp_path / "dump.xml.bz2"
    source.write_bytes(bz2.compress(
        b"<mediawiki><page><title>Lake Orva</title><revision><text>'''Lake Orva''' is a lake in [[Veltria]]."
        b"{{citation needed}}</text></revision></page>"
        b"<page><revision><text>no title</text></revision></page></mediawiki>"))
    errors = []
    assert import_corpus(source, tmp_path / "c.db", errors) == 1
    assert OfflineCorpus(tmp_path / "c.db").page("lake orva").text == "Lake Orva is a lake in Veltria."
    assert errors == ["page 2: no <title>"]


def test_jsonl_bad_lines_are_reported_with_their_numbers_and_skipped(tmp_path, caplog):
    source = tmp_path / "pages.jsonl"
    source.write_bytes(
        b'{"title": "Good One", "text": "First good page."}\n'
        b"{not json\n"
        b"\n"
        b'["a", "list"]\n'
        b'{"title": "", "text": "no title"}\n'
        b'{"title": "No Text"}\n'
        b'{"title": "Bad Bytes", "text": "\xff\xfe"}\n'
        b'{"title": "Good Two", "text": "Second good page."}')
    errors = []
    with caplog.at_level(logging.WARNING, logger="prompts.wiki"):
        assert import_corpus(source, tmp_path / "c.db", errors) == 2
    assert [e.split(":")[0] for e in errors] == ["line 2", "line 4", "line 5", "line 6", "line 7"]
    assert "line 2" in caplog.text and "line 7" in caplog.text
    corpus = OfflineCorpus(tmp_path / "c.db")
    assert corpus.page("Good Two").text == "Second good page."


def test_reimport_replaces_pages_with_the_same_title(tmp_path):
    db = tmp_path / "c.db"
    assert import_corpus(JSONL, db) == 10
    assert import_corpus(JSONL, db) == 10
    changed = tmp_path / "changed.jsonl"
    changed.write_text('{"title": "Dunavec", "text": "Dunavec is a village of potters."}\n')
    assert import_corpus(changed, db) == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM pages").fetchone() == (10,)
        conn.execute("INSERT INTO pages_fts (pages_fts) VALUES ('integrity-check')")
        conn.execute("INSERT INTO titles_fts (titles_fts) VALUES ('integrity-check')")
    corpus = OfflineCorpus(db)
    assert corpus.page("Dunavec").text == "Dunavec is a village of potters."
    assert corpus.similar("potters")[0] == "Dunavec"
    assert "Dunavec" not in corpus.similar("birthplace guitarist")


@pytest.mark.parametrize("name", ["pages.txt", "pages.json", "pages", "dump.xml.zip"])
def test_unknown_file_kind(tmp_path, name):
    source = tmp_path / name
    source.write_text("{}")
    with pytest.raises(ValueError, match="unknown corpus file kind"):
        import_corpus(source, tmp_path / "c.db")


def test_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read corpus file"):
        import_corpus(tmp_path / "missing.jsonl", tmp_path / "c.db")
    (tmp_path / "dir.xml").mkdir()
    with pytest.raises(ValueError, match="cannot read corpus file"):
        import_corpus(tmp_path / "dir.xml", tmp_path / "c.db")
    broken = tmp_path / "broken.xml.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read corpus file"):
        import_corpus(broken, tmp_path / "c.db")


def test_malformed_xml_imports_nothing(tmp_path):
    source = tmp_path / "cut.xml"
    source.write_text("<mediawiki><page><title>A</title><revision><text>Fine.</text></revision></page><page><tit")
    with pytest.raises(ValueError, match="not well-formed XML"):
        import_corpus(source, tmp_path / "c.db")
    with sqlite3.connect(tmp_path / "c.db") as conn:
        assert conn.execute("SELECT count(*) FROM pages").fetchone() == (0,)


def test_a_missing_corpus_says_how_to_build_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="reason wiki import"):
        OfflineCorpus(tmp_path / "none.db")


def test_a_file_that_is_not_a_corpus_becomes_an_observation(tmp_path):
    bogus = tmp_path / "bogus.db"
    bogus.write_text("hello")
    obs = WikiTool(OfflineCorpus(bogus)).search("Veltria")
    assert obs.startswith("The offline Wikipedia corpus cannot be read (")


# --- markup ----------------------------------------------------------------------------------

@pytest.mark.parametrize("markup, text", [
    ("[[Paris|the capital]] and [[Lyon]]", "the capital and Lyon"),
    ("'''bold''' and ''italic'' and '''''both'''''", "bold and italic and both"),
    ("A{{cite|x={{nested|y}}}} B", "A B"),
    ("Fact.<ref name=\"a\">{{cite web|url=x}}</ref> More.<ref name=\"a\" />", "Fact. More."),
    ("== History ==\nOld town.\n=== Later ===\nNew.", "Old town.\nNew."),
    ("[[File:X.jpg|thumb|A [[nested]] caption]]Text.", "Text."),
    ("Paris ({{IPA|paʁi}}) is big.", "Paris is big."),
    ("{| class=\"wikitable\"\n| a || b\n|}\nAfter.", "After."),
    ("* item one\n# item two", "item one\nitem two"),
    ("x &amp; y<br/>z", "x & yz"),
])
def test_strip_wiki_markup(markup, text):
    assert strip_wiki_markup(markup) == text


# --- live backend ----------------------------------------------------------------------------

class FakeWikipedia:
    """Stands in for wikipedia.page/wikipedia.search, counting calls."""

    def __init__(self, pages=None, disambiguations=None, error=None):
        self.pages = pages or {}
        self.disambiguations = disambiguations or {}
        self.error = error
        self.calls = []

    def page(self, title, auto_suggest=True):
        self.calls.append(("page", title, auto_suggest))
        if self.error:
            raise self.error
        if title in self.disambiguations:
            raise wikipedia.exceptions.DisambiguationError(title, self.disambiguations[title])
        if title not in self.pages:
            raise wikipedia.exceptions.PageError(title)
        return SimpleNamespace(title=title, content=self.pages[title])

    def search(self, query, results=10):
        self.calls.append(("search", query, results))
        if self.error:
            raise self.error
        return [t for t in self.pages if query.split()[0].lower() in t.lower()][:results]


PAGES = {"Marenhold": "Marenhold is a city. It is in Veltria.\n\n== History ==\nIt was founded early.",
         "Marenhold Castle": "A castle."}


def live(tmp_path, fake) -> LiveWikipedia:
    return LiveWikipedia(tmp_path / "cache" / "wiki.db", fetch_page=fake.page, search=fake.search)


def test_live_search_uses_the_exact_title_and_drops_headings(tmp_path):
    fake = FakeWikipedia(PAGES)
    tool = WikiTool(live(tmp_path, fake))
    assert tool.search("Marenhold") == "Marenhold is a city. It is in Veltria. It was founded early."
    assert fake.calls == [("page", "Marenhold", False)]
    assert tool.lookup("founded") == "(Result 1 / 1) It was founded early."


def test_live_responses_are_cached(tmp_path):
    fake = FakeWikipedia(PAGES)
    tool = WikiTool(live(tmp_path, fake))
    first = tool.search("Marenhold"), tool.search("Maren")
    calls = len(fake.calls)
    assert calls == 3  # page, page (missing), search
    assert (tool.search("Marenhold"), tool.search("Maren")) == first
    assert len(fake.calls) == calls


def test_the_cache_survives_a_new_instance(tmp_path):
    fake = FakeWikipedia(PAGES)
    first = WikiTool(live(tmp_path, fake)).search("Maren")
    assert first == "Could not find Maren. Similar: ['Marenhold', 'Marenhold Castle']."
    offline = FakeWikipedia(error=requests.ConnectionError("no route to host"))
    assert WikiTool(live(tmp_path, offline)).search("Maren") == first
    assert offline.calls == []


def test_disambiguation_lists_the_options(tmp_path):
    fake = FakeWikipedia(PAGES, disambiguations={"Sella": ["Sella River", "Sella (surname)", ""]})
    tool = WikiTool(live(tmp_path, fake))
    assert tool.search("Sella") == "Could not find Sella. Similar: ['Sella River', 'Sella (surname)']."
    assert WikiTool(live(tmp_path, fake)).search("Sella").endswith("['Sella River', 'Sella (surname)'].")
    assert fake.calls == [("page", "Sella", False)]


@pytest.mark.parametrize("error", [
    requests.ConnectionError("Max retries exceeded"),
    requests.Timeout("read timed out"),
    wikipedia.exceptions.HTTPTimeoutError("Marenhold"),
    wikipedia.exceptions.WikipediaException("maxlag"),
    TimeoutError("timed out"),
])
def test_network_failure_is_an_observation(tmp_path, error):
    fake = FakeWikipedia(error=error)
    tool = WikiTool(live(tmp_path, fake))
    obs = tool.search("Marenhold")
    assert obs.startswith(f"Wikipedia is unreachable ({type(error).__name__}")
    assert obs.endswith("; try again later or use the offline corpus.")
    assert tool.page is None


def test_failures_are_not_cached(tmp_path):
    down = FakeWikipedia(error=requests.ConnectionError("down"))
    assert WikiTool(live(tmp_path, down)).search("Marenhold").startswith("Wikipedia is unreachable")
    up = FakeWikipedia(PAGES)
    assert WikiTool(live(tmp_path, up)).search("Marenhold").startswith("Marenhold is a city.")


def test_failure_while_listing_similar_titles(tmp_path):
    def down(query, results=10):
        raise requests.ConnectionError("down")
    backend = LiveWikipedia(tmp_path / "wiki.db", fetch_page=FakeWikipedia(PAGES).page, search=down)
    assert WikiTool(backend).search("Nowhere").startswith("Wikipedia is unreachable (ConnectionError: down)")


def test_default_network_functions_are_the_wikipedia_package(tmp_path):
    backend = LiveWikipedia(tmp_path / "wiki.db")
    assert backend._fetch_page is wikipedia.page and backend._search is wikipedia.search


def test_an_unusable_cache_path_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot open the Wikipedia cache"):
        LiveWikipedia(tmp_path / "file" / "wiki.db", fetch_page=FakeWikipedia().page)
