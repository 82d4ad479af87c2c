from engine.text_stream import TextStream


def feed_all(stream, pieces):
    return "".join(stream.feed(p) for p in pieces) + stream.finish()


def test_stop_string_spanning_tokens_is_cut_and_not_emitted():
    stream = TextStream(["\nObservation"])
    out = feed_all(stream, [b"Action: Search[x]", b"\nObs", b"ervation", b" 1: secret"])
    assert out == "Action: Search[x]"
    assert stream.stopped and stream.text == "Action: Search[x]"


def test_partial_stop_prefix_is_held_back_then_released():
    stream = TextStream(["STOP"])
    assert stream.feed(b"abc ST") == "abc "
    assert stream.feed(b"ring") == "STring"
    assert not stream.stopped


def test_earliest_of_several_stop_strings_wins():
    stream = TextStream(["world", "lo"])
    assert feed_all(stream, [b"hello world"]) == "hel"


def test_multibyte_character_split_across_tokens_is_never_emitted_broken():
    robot = "🤖".encode()
    stream = TextStream()
    emitted = [stream.feed(robot[:1]), stream.feed(robot[1:3]), stream.feed(robot[3:] + b"!")]
    assert emitted == ["", "", "🤖!"]
    assert all("\ufffd" not in e for e in emitted)


def test_incomplete_character_at_the_end_becomes_replacement_char():
    stream = TextStream()
    assert stream.feed("é".encode()[:1]) == ""
    assert stream.finish() == "\ufffd"


def test_nothing_is_emitted_after_a_stop():
    stream = TextStream(["."])
    assert stream.feed(b"Done. More") == "Done"
    assert stream.feed(b"text") == "" and stream.finish() == ""
