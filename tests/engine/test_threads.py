"""The thread chooser: starts from the prior, follows measurements, re-tries the slower count."""
from engine.threads import RETRY_EVERY, ThreadChooser


def test_small_steps_start_on_one_thread_and_large_ones_on_all():
    chooser = ThreadChooser(2)
    assert chooser.choose(1) == 1 and chooser.choose(512) == 2


def test_the_measured_faster_count_wins_and_the_other_is_retried():
    chooser = ThreadChooser(2)
    for threads, seconds in ((2, 0.4), (1, 0.2)):  # a busy core: two threads are slower than one
        assert chooser.choose(512) == threads
        chooser.record(512, threads, seconds)
    picks = [chooser.choose(512) for _ in range(2 * RETRY_EVERY)]
    assert picks.count(1) > picks.count(2) >= 1  # mostly one thread, two re-tried now and then
    for _ in range(10):  # the neighbour left: two threads are faster again
        chooser.record(512, 2, 0.05)
    assert chooser.choose(512) == 2


def test_buckets_are_separate():
    chooser = ThreadChooser(2)
    chooser.record(1, 1, 0.01)
    chooser.record(1, 2, 0.02)
    assert chooser.choose(1) == 1 and chooser.choose(600) == 2  # an untried bucket starts from its prior
