"""A main container for launcher tests: asks the sidecar for a word, writes return.json."""

import json
import os
import sys
import urllib.request

from llmops.jobs.common import write_result

mode = os.environ.get("MODE", "ok")
if mode == "fail":
    print("main failing on purpose", flush=True)
    sys.exit(4)
if mode == "sleep":
    import time

    time.sleep(60)
word = ""
if os.environ.get("SIDECAR_URL"):
    word = urllib.request.urlopen(os.environ["SIDECAR_URL"] + "/word", timeout=5).read().decode()
if mode == "no-result":
    sys.exit(0)
with open(sys.argv[1], "w") as f:  # a path under a mounted volume, mapped by the launcher
    f.write("written")
write_result({"word": word, "args": sys.argv[1:], "secret": os.environ.get("TOKEN"),
              "greeting": os.environ.get("GREETING")})
print(json.dumps({"done": True}), flush=True)
