"""Code shared by the Tandem Lambda functions: settings, AWS clients, domain models, ledger, archive."""
