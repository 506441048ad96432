"""AWS's SAM transform, as CloudFormation applies it: ``aws-sam-translator`` run in the SAM CLI's tool venv."""
