"""A WebSocket's permission re-check reads the user, whether its token still holds and whether it is
an operator in one query, then whether it may see the stream in one more (it was four queries: a
thousand viewers re-check several times a second, each through the ORM)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from apps.accounts.models import ApiToken
from apps.accounts.roles import OPERATORS_GROUP
from apps.evaluations.consumers import EvaluationConsumer
from apps.evaluations.models import Status
from apps.evaluations.tests.factories import make_evaluation
from crucible.ws_auth import CloseCode, still_signed_in

pytestmark = pytest.mark.django_db


def viewer_of(evaluation, user, token=None) -> EvaluationConsumer:
    consumer = EvaluationConsumer()
    consumer.scope = {"user": user, "api_token_id": token.pk if token else None}
    consumer.evaluation_id = evaluation.pk
    return consumer


def recheck(consumer) -> int:
    """What ``_access_denied`` answers (0: may go on), run here on this thread."""
    user = still_signed_in(consumer.scope)
    if user is None:
        return CloseCode.NOT_SIGNED_IN
    return consumer.denies(user) or 0


def test_alices_token_viewer_is_rechecked_in_two_queries(alice, django_assert_num_queries):
    run = make_evaluation(alice, status=Status.RUNNING)
    token, _ = ApiToken.issue(alice, "cli")
    with django_assert_num_queries(2):
        assert recheck(viewer_of(run, alice, token)) == 0


def test_an_operator_by_group_watching_alices_run_is_rechecked_in_two_queries(alice, bob, django_assert_num_queries):
    Group.objects.get_or_create(name=OPERATORS_GROUP)[0].user_set.add(bob)
    run = make_evaluation(alice, status=Status.RUNNING)
    token, _ = ApiToken.issue(bob, "cli")
    with django_assert_num_queries(2):
        assert recheck(viewer_of(run, bob, token)) == 0


def test_bob_who_left_the_operators_may_no_longer_watch_alices_run(alice, bob):
    operators = Group.objects.get_or_create(name=OPERATORS_GROUP)[0]
    operators.user_set.add(bob)
    run = make_evaluation(alice, status=Status.RUNNING)
    token, _ = ApiToken.issue(bob, "cli")
    assert recheck(viewer_of(run, bob, token)) == 0
    operators.user_set.remove(bob)
    assert recheck(viewer_of(run, bob, token)) == CloseCode.NOT_FOUND


def test_a_revoked_token_is_refused_in_one_query(alice, django_assert_num_queries):
    run = make_evaluation(alice, status=Status.RUNNING)
    token, _ = ApiToken.issue(alice, "cli")
    token.revoke()
    with django_assert_num_queries(1):
        assert recheck(viewer_of(run, alice, token)) == CloseCode.NOT_SIGNED_IN


def test_a_deactivated_user_is_refused(alice):
    run = make_evaluation(alice, status=Status.RUNNING)
    token, _ = ApiToken.issue(alice, "cli")
    alice.is_active = False
    alice.save()
    assert recheck(viewer_of(run, alice, token)) == CloseCode.NOT_SIGNED_IN
