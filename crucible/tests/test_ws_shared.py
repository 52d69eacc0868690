"""Answers shared by a process's WebSocket connections (``crucible.ws_auth.SharedAnswers``): a
hundred viewers of one run with the same credentials ask once, and nobody gets another's answer."""

from __future__ import annotations

import asyncio

from apps.evaluations.consumers import EvaluationConsumer
from crucible.ws_auth import SharedAnswers


class Asker:
    """Counts how often it was asked; each answer says which time it was."""

    def __init__(self):
        self.asked = 0

    async def __call__(self):
        self.asked += 1
        await asyncio.sleep(0)  # an answer takes a turn of the loop, as a database call does
        return self.asked


async def test_a_hundred_viewers_asking_at_once_share_one_answer():
    answers, asker = SharedAnswers(), Asker()
    got = await asyncio.gather(*(answers.get("alice's run", asker, max_age=1.0) for _ in range(100)))
    assert asker.asked == 1
    assert set(got) == {1}


async def test_a_recent_answer_is_reused_and_an_old_one_asked_again():
    answers, asker = SharedAnswers(), Asker()
    assert await answers.get("alice's run", asker, max_age=60.0) == 1
    assert await answers.get("alice's run", asker, max_age=60.0) == 1
    assert await answers.get("alice's run", asker, max_age=0.0) == 2  # any answer is too old


async def test_a_question_that_must_be_fresh_is_always_asked_and_its_answer_shared():
    answers, asker = SharedAnswers(), Asker()
    assert await answers.get("alice's run", asker, max_age=60.0) == 1
    assert await answers.get("alice's run", asker, max_age=None) == 2
    assert await answers.get("alice's run", asker, max_age=60.0) == 2


async def test_other_keys_never_get_each_others_answers():
    answers, alice_asker, bob_asker = SharedAnswers(), Asker(), Asker()
    await answers.get("alice's run", alice_asker, max_age=60.0)
    await answers.get("alice's run", alice_asker, max_age=60.0)
    assert await answers.get("bob's run", bob_asker, max_age=60.0) == 1
    assert (alice_asker.asked, bob_asker.asked) == (1, 1)


async def test_a_viewer_that_goes_away_does_not_cancel_the_answer_others_wait_for():
    answers, asker = SharedAnswers(), Asker()
    first = asyncio.ensure_future(answers.get("alice's run", asker, max_age=60.0))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(answers.get("alice's run", asker, max_age=60.0))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == 1


def consumer_for(path: str, user_id: int, token_id: int | None, session_key: str | None = None):
    consumer = EvaluationConsumer()
    consumer.scope = {
        "path": path,
        "user": type("User", (), {"pk": user_id})(),
        "api_token_id": token_id,
        "session": type("Session", (), {"session_key": session_key})() if session_key else None,
    }
    return consumer


def test_permission_answers_are_shared_only_by_one_stream_with_the_same_credentials():
    alice_cli = consumer_for("/ws/evaluations/e1/", user_id=1, token_id=10)
    assert alice_cli._access_key() == consumer_for("/ws/evaluations/e1/", user_id=1, token_id=10)._access_key()
    others = [
        consumer_for("/ws/evaluations/e1/", user_id=1, token_id=11),  # alice's other token
        consumer_for("/ws/evaluations/e1/", user_id=1, token_id=None, session_key="s1"),  # her browser
        consumer_for("/ws/evaluations/e1/", user_id=2, token_id=20),  # bob
        consumer_for("/ws/evaluations/e2/", user_id=1, token_id=10),  # another run
    ]
    keys = {alice_cli._access_key(), *(other._access_key() for other in others)}
    assert len(keys) == 5
