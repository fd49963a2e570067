"""Kafka topic names of the contract, and the dead-letter convention."""

LOANS = "loans.events"
CASES = "cases.events"
REMINDERS = "reminders.events"
VISITS = "visits.events"
CHECKPOINTS = "audit.checkpoints"

EVENT_TOPICS = (LOANS, CASES, REMINDERS, VISITS, CHECKPOINTS)

# One record at offset 0 names the broker's incarnation: a broker that lost its topics gets a
# new one, and every position kept in a store under the old name is left behind.
INCARNATION = "dunwell.incarnation"

# Stored events that a service's relay could not turn into contract events: set aside here
# (with the same headers) so the outbox goes on.
OUTBOX_DLQ = "dunwell.outbox.dlq"

DLQ_REASON_HEADER = "dunwell-dlq-reason"
DLQ_ERROR_TYPE_HEADER = "dunwell-dlq-error-type"
DLQ_GROUP_HEADER = "dunwell-dlq-group"
DLQ_ORIGIN_HEADER = "dunwell-dlq-origin"
DLQ_VALUE_OMITTED_HEADER = "dunwell-dlq-value-omitted"


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


def all_topics() -> tuple[str, ...]:
    return EVENT_TOPICS + tuple(dlq(t) for t in EVENT_TOPICS) + (OUTBOX_DLQ, INCARNATION)
