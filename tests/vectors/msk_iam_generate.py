"""Reference vectors for the MSK IAM auth token, produced by AWS's own signer.

Regenerate (the output is committed as msk_iam.json, which the Rust tests read):

    python3 -m venv /tmp/msk-venv
    /tmp/msk-venv/bin/pip install aws-msk-iam-sasl-signer-python==1.0.2   # boto3/botocore 1.44.8 here
    /tmp/msk-venv/bin/python tests/vectors/msk_iam_generate.py > tests/vectors/msk_iam.json

The signer reads the clock through botocore.auth.get_current_datetime, which is pinned here to
each vector's time; the credentials are fixed, made-up values.
"""
import datetime
import importlib.metadata
import json

import botocore.auth
from botocore.credentials import Credentials
from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

CASES = [
    # (region, access key, secret key, session token, signing time UTC)
    ("ap-south-1", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None,
     "2026-11-29T12:00:00"),
    ("ap-south-1", "ASIAQEXAMPLEKEY12345", "secret/with+special=chars", "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCmFwLXNvdXRoLTEiRzBFAiEA+token=",
     "2026-01-01T00:00:00"),
    ("us-east-1", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token",
     "2015-08-30T12:36:00"),
]

vectors = []
for region, access, secret, token, at in CASES:
    when = datetime.datetime.fromisoformat(at).replace(tzinfo=datetime.timezone.utc)
    botocore.auth.get_current_datetime = lambda when=when: when
    creds = Credentials(access, secret, token)
    auth_token, expiry_ms = MSKAuthTokenProvider.__dict__["__construct_auth_token"](region, creds)
    vectors.append({
        "region": region,
        "access_key_id": access,
        "secret_access_key": secret,
        "session_token": token,
        "signing_time": at + "Z",
        "user_agent": "aws-msk-iam-sasl-signer-python/"
        + importlib.metadata.version("aws-msk-iam-sasl-signer-python"),
        "token": auth_token,
        "expiry_ms": expiry_ms,
    })
print(json.dumps({"generator": "aws-msk-iam-sasl-signer-python "
                  + importlib.metadata.version("aws-msk-iam-sasl-signer-python")
                  + ", botocore " + importlib.metadata.version("botocore"),
                  "vectors": vectors}, indent=2))
