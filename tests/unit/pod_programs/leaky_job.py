"""A main container for launcher tests that leaks its secret everywhere it can, then fails.

Prints ``$TOKEN`` raw, URL-encoded and inside JSON; writes it into ``return.json`` (as a value,
nested, and as a dict key); prints it again in its last lines, to stderr; exits ``$EXIT_CODE``
(1 by default; 0 to succeed, 2 for a verdict).
"""

import json
import os
import sys
from urllib.parse import quote

from llmops.jobs.common import write_result

token = os.environ["TOKEN"]
print(f"token is {token}", flush=True)
print(f"as url: https://example.org/?t={quote(token, safe='')}", flush=True)
print("as json:", json.dumps({"token": token}), flush=True)
print("args:", *sys.argv[1:], flush=True)
write_result({"status": "rejected", "echo": token, "nested": [{"why": f"bad {token}"}], token: "as a key",
              "problems": ["unrelated"]})
print(f"failing with {token}", file=sys.stderr, flush=True)
sys.exit(int(os.environ.get("EXIT_CODE", "1")))
