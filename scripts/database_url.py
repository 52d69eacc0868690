"""Print "role password database" of local.env's DATABASE_URL when it names the local PostgreSQL
(setup.sh creates that role and database); prints "- - -" for another server or none (its operator's).

Only names PostgreSQL accepts unquoted are used (letters, digits, underscores): anything else is refused.
"""

import re
import sys
from urllib.parse import unquote, urlparse

SAFE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
SAFE_PASSWORD = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


def main(env_file: str) -> str:
    url = ""
    with open(env_file) as handle:
        for line in handle:
            if line.startswith("DATABASE_URL="):
                url = line.split("=", 1)[1].strip()
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost") or not parsed.password:
        return "- - -"
    role, password, name = unquote(parsed.username or ""), unquote(parsed.password), parsed.path.lstrip("/")
    if not (SAFE_NAME.match(role) and SAFE_NAME.match(name) and SAFE_PASSWORD.match(password)):
        raise SystemExit(f"{env_file}: DATABASE_URL's role, database or password has characters setup.sh will not use")
    return f"{role} {password} {name}"


if __name__ == "__main__":
    print(main(sys.argv[1]))
