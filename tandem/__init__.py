"""Operator tooling for Tandem: drill, local invoke, local services. Not shipped to Lambda."""
