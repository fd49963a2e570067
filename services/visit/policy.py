"""Visit's pure rules (C7–C12, C14: verified debtor, notice, refusal, credentials, hours,
recording, complaints) arrive with the field-visit issue; none is enforced here yet."""
