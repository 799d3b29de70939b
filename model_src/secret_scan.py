"""Find things that look like secret values in text: compiled pipelines, manifests, logs, params.

References to secrets (`secretKeyRef`, `${DB_PASSWORD}`, `$(VAR)`, env var names) are fine; literal
values are not.
"""

from __future__ import annotations

import re

PATTERNS = {
    "aws_access_key_id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private_key": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    "secret_assignment": re.compile(
        r"(?i)(?<![a-z0-9])(?:password|passwd|secret_access_key|secret|access_token|auth_token|api_token|api_key)\b[\"']?\s*[:=]\s*[\"']?"
        r"(?![\"']?\s*(?:\$|\{|<|\*|None\b|null\b|false\b|true\b|\"\"|''))([^\s\"',}]{8,})"),
    "credentials_in_url": re.compile(r"://[^/\s:@$]+:[^/\s@$]{4,}@"),
    "github_token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
}


def find_secrets(text: str) -> list[tuple[str, str]]:
    """(pattern name, matched text) for everything that looks like a literal secret.

    >>> find_secrets("password: ${DB_PASSWORD}\\nkey: {secretKeyRef: {name: s3, key: secret_access_key}}")
    []
    >>> [name for name, _ in find_secrets("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")]
    ['secret_assignment']
    >>> [name for name, _ in find_secrets("postgresql://mlflow:hunter2hunter2@db:5432/mlflow")]
    ['credentials_in_url']
    """
    found = []
    for name, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            found.append((name, match.group(0)))
    return found
