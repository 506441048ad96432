"""SQS-triggered transaction processor: validate, journal, apply to the ledger exactly once, record status."""
