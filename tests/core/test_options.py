"""The plugins' option toolkit: typed declarations parsed from the query string and keywords."""

import pytest

from opal_broadcast import InvalidOption
from opal_broadcast.plugin import BackboneURL, Option, Options

OPTIONS = Options(
    Option.text("name"),
    Option.integer("db", default=0, minimum=0, maximum=15),
    Option.number("ratio", default=0.5, minimum=0),
    Option.boolean("decode", default=True),
    Option.choice("mode", ("fast", "safe"), default="safe"),
    Option.duration("wait", default=2.0, minimum=0.001),
    Option.path("ca_file"),
    Option.text("password", secret=True, env="ACME_PASSWORD"),
    Option.value("settings", lambda v: dict(v)),  # type: ignore[call-overload]
)


def parse(query="", environ=None, **keywords):
    url = BackboneURL.parse("acme://h" + (f"?{query}" if query else ""))
    return OPTIONS.parse(url, keywords, environ={} if environ is None else environ)


def test_defaults_fill_what_is_not_given():
    values = parse()
    assert values == {
        "name": None,
        "db": 0,
        "ratio": 0.5,
        "decode": True,
        "mode": "safe",
        "wait": 2.0,
        "ca_file": None,
        "password": None,
        "settings": None,
    }


def test_query_values_are_converted_and_keywords_win(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    values = parse(f"name=a&db=3&ratio=1.5&decode=off&mode=fast&wait=500ms&ca_file={ca}", db=4)
    assert values["name"] == "a"
    assert values["db"] == 4
    assert values["ratio"] == 1.5
    assert values["decode"] is False
    assert values["mode"] == "fast"
    assert values["wait"] == pytest.approx(0.5)
    assert values["ca_file"] == str(ca)


def test_a_path_starting_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ca.pem").write_text("x")
    assert parse("ca_file=~/ca.pem")["ca_file"] == str(tmp_path / "ca.pem")


@pytest.mark.parametrize(
    ("text", "seconds"), [("5", 5.0), ("2.5s", 2.5), ("250ms", 0.25), ("2m", 120.0), ("1h", 3600.0)]
)
def test_durations(text, seconds):
    assert parse(f"wait={text}")["wait"] == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("query", "keywords", "expected"),
    [
        ("db=x", {}, "'db' must be a whole number from 0 to 15, not 'x'"),
        ("db=16", {}, "'db' must be a whole number from 0 to 15, not '16'"),
        ("", {"db": True}, "'db' must be a whole number"),
        ("", {"db": 2.5}, "'db' must be a whole number"),
        ("ratio=nan", {}, "'ratio' must be a number >= 0"),
        ("ratio=-1", {}, "'ratio' must be a number >= 0, not '-1'"),
        ("decode=maybe", {}, "'decode' must be true or false, not 'maybe'"),
        ("mode=turbo", {}, "'mode' must be one of fast, safe, not 'turbo'"),
        ("wait=soon", {}, "'wait' must be a duration in seconds"),
        ("wait=0", {}, "'wait' must be a duration in seconds >= 0.001"),
        ("ca_file=/no/such/file", {}, "'ca_file' must be the path of an existing file"),
        ("", {"name": 3}, "'name' must be a str, not 3"),
        ("", {"settings": 3}, "'settings'"),
    ],
)
def test_bad_values_name_the_option_the_value_and_what_is_expected(query, keywords, expected):
    with pytest.raises(InvalidOption, match="acme://") as caught:
        parse(query, **keywords)
    assert expected in str(caught.value)


def test_an_unknown_option_lists_the_valid_ones_and_the_closest():
    with pytest.raises(InvalidOption) as caught:
        parse("nmae=x")
    message = str(caught.value)
    assert "Unknown option 'nmae' (did you mean 'name'?)" in message
    assert (
        "Valid options: ca_file, db, decode, mode, name, password, ratio, settings, wait."
        in message
    )


def test_a_secret_is_refused_in_the_query_string_and_masked_in_errors():
    with pytest.raises(InvalidOption, match="a secret") as caught:
        parse("password=hunter2")
    assert "hunter2" not in str(caught.value)
    assert "ACME_PASSWORD" in str(caught.value)
    values = parse(password="hunter2")
    assert values["password"] == "hunter2"
    assert OPTIONS.secrets(values) == ["hunter2"]


def test_a_keyword_only_option_is_refused_in_the_query_string():
    with pytest.raises(InvalidOption, match="only a keyword option"):
        parse("settings=x")
    assert parse(settings={"a": "b"})["settings"] == {"a": "b"}


def test_the_environment_is_the_fallback():
    assert parse(environ={"ACME_PASSWORD": "from-env"})["password"] == "from-env"
    assert parse(environ={"ACME_PASSWORD": "from-env"}, password="kw")["password"] == "kw"


def test_an_invalid_value_from_the_environment_says_where_it_came_from():
    options = Options(Option.integer("pool", env="ACME_POOL", minimum=1))
    url = BackboneURL.parse("acme://h")
    with pytest.raises(InvalidOption, match=r"not '0' \(from ACME_POOL\)"):
        options.parse(url, {}, environ={"ACME_POOL": "0"})


def test_declaring_an_option_twice_or_with_a_bad_name_is_refused():
    with pytest.raises(ValueError, match="declared twice"):
        Options(Option.text("a"), Option.integer("a"))
    with pytest.raises(ValueError, match="lower case"):
        Options(Option.text("Bad-Name"))


@pytest.mark.parametrize("value", ["1_0", "+3", "3.0", "0x10", "", 3.0])
def test_an_integer_is_digits_only(value):
    with pytest.raises(InvalidOption, match="'db' must be a whole number"):
        parse(db=value)
    assert parse("db= 7 ")["db"] == 7


def test_a_choice_may_ignore_case_and_gives_the_declared_spelling():
    options = Options(Option.choice("reqs", ("required", "none"), case_sensitive=False))
    url = BackboneURL.parse("acme://h?reqs=REQUIRED")
    assert options.parse(url, environ={})["reqs"] == "required"
    with pytest.raises(InvalidOption, match="one of required, none, not 'maybe'"):
        options.parse(BackboneURL.parse("acme://h?reqs=maybe"), environ={})
    with pytest.raises(InvalidOption, match="one of required, none, not 5"):
        options.parse(BackboneURL.parse("acme://h"), {"reqs": 5}, environ={})


def test_a_path_may_have_to_be_a_file_or_a_directory(tmp_path):
    options = Options(Option.path("ca", kind="file"), Option.path("capath", kind="directory"))
    (tmp_path / "ca.pem").write_text("x")
    url = BackboneURL.parse("acme://h")
    values = options.parse(url, {"ca": tmp_path / "ca.pem", "capath": tmp_path}, environ={})
    assert values == {"ca": str(tmp_path / "ca.pem"), "capath": str(tmp_path)}
    with pytest.raises(InvalidOption, match="'ca' must be the path of an existing file"):
        options.parse(url, {"ca": str(tmp_path)}, environ={})
    with pytest.raises(InvalidOption, match="'capath' must be the path of an existing directory"):
        options.parse(url, {"capath": str(tmp_path / "ca.pem")}, environ={})


def test_a_value_without_a_check_is_taken_as_given_and_a_check_may_word_its_own_error():
    def even(value):
        if int(value) % 2:
            raise InvalidOption("acme:// wants an even count, you gave an odd one.")
        return int(value)

    options = Options(Option.value("context"), Option.value("count", even, query=True))
    marker = object()
    url = BackboneURL.parse("acme://h?count=4")
    assert options.parse(url, {"context": marker}, environ={}) == {"context": marker, "count": 4}
    with pytest.raises(InvalidOption) as caught:
        options.parse(BackboneURL.parse("acme://h?count=3"), environ={})
    assert str(caught.value) == "acme:// wants an even count, you gave an odd one."


def test_large_bounds_are_written_in_full():
    options = Options(Option.integer("size", minimum=8000, maximum=256 * 1024 * 1024))
    with pytest.raises(InvalidOption, match="from 8000 to 268435456, not '1'"):
        options.parse(BackboneURL.parse("acme://h?size=1"), environ={})
