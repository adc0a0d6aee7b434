"""Quality rules: each rejects what it is for, passes real prose, and follows its config knob."""
from __future__ import annotations

import pytest

from webtext.crawl.extract.quality import RULES, QualityConfig, all_failures, first_failure
from webtext.pipeline.demo_web import sample_articles
from webtext.pipeline.stage_options import config_from

DEFAULT = QualityConfig()


@pytest.fixture(scope="module")
def prose() -> str:
    return "\n".join(sample_articles(1)[0].paragraphs)


def varied_words(n: int) -> str:
    return " ".join(f"w{i}ord" for i in range(n))


# (rule, a text that fails it and no rule before it)
FAILING = {
    "too-few-words": "The cat sat on the mat with the dog.",
    "too-many-words": None,  # built in the test: big
    "mean-word-length": " ".join(["a b c d e of to in it"] * 12),
    "symbol-ratio": "\n".join(f"#tag{i} #news{i} #daily{i} the story of today and more" for i in range(12)),
    "bullet-lines": "\n".join(f"• item number {i} with the things and more" for i in range(12)),
    "ellipsis-lines": "\n".join(f"Read the full story of day {i} and the rest..." for i in range(12)),
    "alpha-words": " ".join(f"the {1000 + i} {2000 + i} {3000 + i} {4000 + i} {5000 + i}" for i in range(20)),
    "stop-words": varied_words(60),
    "lorem-ipsum": None,  # built in the test from prose
    "curly-brace": None,
    "repeated-lines": "\n".join(["Subscribe to our newsletter for the latest news and more"] * 8 +
                                [f"A different sentence {i} about the city and the people in it" for i in range(6)]),
    "top-ngram": " ".join(f"of the {w}" for w in varied_words(40).split()),
    "duplicate-ngrams": None,
}


def test_real_prose_passes_every_rule(prose):
    assert all_failures(prose, "en", QualityConfig(disabled=frozenset())) == {}


@pytest.mark.parametrize("rule", [r for r, text in FAILING.items() if text is not None])
def test_each_rule_rejects_its_case(rule):
    failure = first_failure(FAILING[rule], "en", DEFAULT)
    assert failure is not None and failure[0] == rule, failure


def test_size_rules(prose):
    assert first_failure(prose * 40, "en", QualityConfig(max_words=1000))[0] == "too-many-words"
    assert first_failure(prose, "en", QualityConfig(min_words=10_000))[0] == "too-few-words"


def test_lorem_ipsum_and_curly_brace(prose):
    assert first_failure(prose + "\nLorem ipsum dolor sit amet.", "en", DEFAULT)[0] == "lorem-ipsum"
    code = prose + "\nint main() { return 0; }"
    assert first_failure(code, "en", DEFAULT) is None  # C4's curly-brace rule is off by default
    assert first_failure(code, "en", QualityConfig(disabled=frozenset()))[0] == "curly-brace"


def test_duplicate_ngrams_catch_a_repeated_passage(prose):
    words = prose.split()
    passage = " ".join(words[:40])
    text = prose + "\n" + " ".join([passage] * 3)
    failure = first_failure(text, "en", DEFAULT)
    assert failure is not None and failure[0] in ("duplicate-ngrams", "top-ngram")
    assert first_failure(text, "en", QualityConfig(disabled=frozenset({"top-ngram"})))[0] == "duplicate-ngrams"


def test_stop_words_only_apply_to_english():
    text = FAILING["stop-words"]
    assert first_failure(text, "en", DEFAULT)[0] == "stop-words"
    assert first_failure(text, "de", DEFAULT) is None


@pytest.mark.parametrize("rule, relaxed", [
    ("bullet-lines", QualityConfig(max_bullet_lines=1.0)), ("alpha-words", QualityConfig(min_alpha_words=0.1)),
    ("repeated-lines", QualityConfig(max_duplicate_lines=0.9, max_duplicate_line_chars=0.9)),
    ("ellipsis-lines", QualityConfig(max_ellipsis_lines=1.0)), ("symbol-ratio", QualityConfig(max_symbol_ratio=1.0)),
    ("top-ngram", QualityConfig(top_ngram_limits=(0.9, 0.9, 0.9))), ("too-few-words", QualityConfig(min_words=5)),
    ("mean-word-length", QualityConfig(min_mean_word_length=1.0)), ("stop-words", QualityConfig(min_stop_words=0)),
])
def test_knobs_move_the_thresholds(rule, relaxed):
    assert rule in all_failures(FAILING[rule], "en", DEFAULT)
    assert rule not in all_failures(FAILING[rule], "en", relaxed)


def test_disabled_rules_are_skipped_and_every_rule_is_a_reason():
    everything_off = QualityConfig(disabled=frozenset(RULES))
    for text in filter(None, FAILING.values()):
        assert first_failure(text, "en", everything_off) is None
    assert set(FAILING) == set(RULES)


def test_config_from_takes_stage_options():
    config = config_from(QualityConfig, {"min_words": 10, "top_ngram_limits": [0.3, 0.3, 0.3],
                                         "skip_rules": ["lorem-ipsum"], "unrelated_option": 1})
    assert config.min_words == 10 and config.top_ngram_limits == (0.3, 0.3, 0.3)
    assert config.disabled == frozenset({"lorem-ipsum"})
    assert config_from(QualityConfig, {"skip_rules": ["all"]}).disabled == frozenset(RULES)
    assert config_from(QualityConfig, {"skip_rules": ["none"]}).disabled == frozenset()


def test_a_rule_declared_in_one_place_reaches_skip_rules_the_flags_the_toml_keys_and_the_rejects(
        prose, monkeypatch, capsys, webtext_cli):
    """A new rule is one decorated check in quality.py; `--skip-rules`, its flag, its [crawl] key and its reject
    reason all follow from it. The registration is undone after the test."""
    from webtext.crawl.extract import quality
    from webtext.pipeline import crawl_stage
    from webtext.pipeline.stage import resolve_config

    monkeypatch.setattr(quality, "RULES", dict(quality.RULES))

    @quality.quality_rule("too-many-widgets", max_widgets=quality.Threshold(int, 2, "mentions of 'widget'"))
    def too_many_widgets(doc, config):
        count = doc.text.count("widget")
        return f"{count} widgets > {config.max_widgets}" if count > config.max_widgets else None

    # what importing quality.py and the crawl stage derives from the rules, derived again with the new one
    monkeypatch.setattr(quality, "QualityConfig", quality.quality_config())
    monkeypatch.setattr(crawl_stage.STAGE, "options", crawl_stage.crawl_options())

    with pytest.raises(SystemExit):
        webtext_cli("crawl", "--help")
    usage = " ".join(capsys.readouterr().out.split())
    assert "--max-widgets MAX_WIDGETS rule too-many-widgets: mentions of 'widget' (default: 2)" in usage
    skip_rules = next(o for o in crawl_stage.STAGE.options if o.flag == "--skip-rules")
    assert "too-many-widgets" in skip_rules.choices and "too-many-widgets" in usage

    text = prose + " widget" * 3
    from_toml = crawl_stage.extract_config(resolve_config(crawl_stage.STAGE, {"crawl": {"max_widgets": 3}}, {}))
    defaults = crawl_stage.extract_config(resolve_config(crawl_stage.STAGE, {}, {}))
    skipped = crawl_stage.extract_config(resolve_config(crawl_stage.STAGE, {}, {"skip_rules": ["too-many-widgets"]}))
    assert from_toml.quality.max_widgets == 3 and first_failure(text, "en", from_toml.quality) is None
    assert first_failure(text, "en", defaults.quality) == ("too-many-widgets", "3 widgets > 2")
    assert first_failure(text, "en", skipped.quality) is None


def test_the_sample_web_passes_the_filters():
    for article in sample_articles(200):
        assert first_failure("\n".join([article.title] + article.paragraphs), "en", DEFAULT) is None, article.slug
