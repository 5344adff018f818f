"""services.shared.polling.poll: the services' one waiting loop."""

from services.shared.polling import poll


def test_poll_returns_the_first_answer_that_is_not_none() -> None:
    answers = iter([None, None, "ready", "later"])
    assert poll(lambda: next(answers), within_s=5, interval_s=0) == "ready"
    assert next(answers) == "later"  # asked no more once answered


def test_poll_gives_none_once_the_time_is_up_having_asked_more_than_once() -> None:
    asked: list[int] = []

    def never() -> None:
        asked.append(1)

    assert poll(never, within_s=0.05, interval_s=0.01) is None
    assert len(asked) >= 2
