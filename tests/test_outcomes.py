"""What a server's answer means for an address and for the run: the decision tables."""

from __future__ import annotations

import pytest

from campaign.outcomes import RunEffect, address_outcome, connect_effect, run_effect
from campaign.sendlog import Outcome
from campaign.transports.base import ConnectFailure, ConnectStep, Reply, Stage

ADDRESS_OUTCOMES = [
    # (code, stage, outcome)
    (250, Stage.DATA, Outcome.ACCEPTED),
    (251, Stage.DATA, Outcome.ACCEPTED),
    (550, Stage.RCPT, Outcome.REFUSED),
    (553, Stage.RCPT, Outcome.REFUSED),
    (554, Stage.DATA, Outcome.REFUSED),
    (552, Stage.DATA, Outcome.REFUSED),
    (550, Stage.MAIL, Outcome.PENDING),  # the sender refused: not this address's fault
    (451, Stage.RCPT, Outcome.DEFERRED),
    (450, Stage.MAIL, Outcome.DEFERRED),
    (421, Stage.RCPT, Outcome.DEFERRED),
    (452, Stage.DATA, Outcome.DEFERRED),
    (None, Stage.MAIL, Outcome.DEFERRED),  # lost before the data: try again
    (None, Stage.RCPT, Outcome.DEFERRED),
    (None, Stage.DATA, Outcome.UNKNOWN),  # lost after the data: the server may have it
]


@pytest.mark.parametrize(("code", "stage", "outcome"), ADDRESS_OUTCOMES)
def test_address_outcome(code: int | None, stage: Stage, outcome: Outcome) -> None:
    assert address_outcome(Reply(code, "text", stage)) == outcome


RUN_EFFECTS = [
    (550, Stage.MAIL, RunEffect.STOP),
    (553, Stage.MAIL, RunEffect.STOP),
    (451, Stage.MAIL, RunEffect.CONTINUE),
    (550, Stage.RCPT, RunEffect.CONTINUE),
    (554, Stage.DATA, RunEffect.CONTINUE),
    (250, Stage.DATA, RunEffect.CONTINUE),
    (None, Stage.MAIL, RunEffect.CONTINUE),
]


SENDER = "campaign@mep-letter.eu"
SERVER_WIDE = [
    # (code, text, stops the run and leaves the address pending)
    (553, "5.7.1 <campaign@mep-letter.eu>: Sender address rejected: not owned by user", True),
    (554, "5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied", True),
    (554, "5.7.1 <a@example.net>: Relay access denied", True),
    (550, "5.7.1 <campaign@mep-letter.eu> is not allowed to send here", True),
    (550, "5.1.1 <a@example.net>: Recipient address rejected: User unknown", False),
    (550, "5.7.1 <a@example.net>: Recipient address rejected: blocked by policy", False),
    (450, "4.7.1 <campaign@mep-letter.eu>: Sender address rejected: try later", False),
]


@pytest.mark.parametrize(("code", "text", "everyone"), SERVER_WIDE)
def test_a_refusal_of_the_sender_or_client_at_rcpt_is_the_runs(
    code: int, text: str, everyone: bool
) -> None:
    reply = Reply(code, text, Stage.RCPT)
    assert (run_effect(reply, SENDER) == RunEffect.STOP) is everyone
    if everyone:
        assert address_outcome(reply, SENDER) == Outcome.PENDING
    else:
        assert address_outcome(reply, SENDER) != Outcome.PENDING


@pytest.mark.parametrize(("code", "stage", "effect"), RUN_EFFECTS)
def test_run_effect(code: int | None, stage: Stage, effect: RunEffect) -> None:
    assert run_effect(Reply(code, "text", stage)) == effect


CONNECT_EFFECTS = [
    (ConnectStep.CONNECT, None, RunEffect.CONTINUE),  # refused or timed out: may pass
    (ConnectStep.GREETING, 421, RunEffect.CONTINUE),
    (ConnectStep.GREETING, 554, RunEffect.STOP),
    (ConnectStep.EHLO, 421, RunEffect.CONTINUE),
    (ConnectStep.EHLO, 550, RunEffect.STOP),
    (ConnectStep.TLS, None, RunEffect.STOP),
    (ConnectStep.TLS, 454, RunEffect.STOP),  # never carry on in clear text
    (ConnectStep.LOGIN, 535, RunEffect.STOP),
    (ConnectStep.LOGIN, 454, RunEffect.STOP),  # temporary, but one failed login per run
    (ConnectStep.LOGIN, None, RunEffect.STOP),
]


@pytest.mark.parametrize(("step", "code", "effect"), CONNECT_EFFECTS)
def test_connect_effect(step: ConnectStep, code: int | None, effect: RunEffect) -> None:
    assert connect_effect(ConnectFailure(step, "reason", code=code)) == effect
