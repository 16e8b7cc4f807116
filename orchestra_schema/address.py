"""What --database names: an SQLite file, or a PostgreSQL database.

Accepted: a path (or the SQLite-era `Data Source=PATH` string), a `postgresql://` or
`postgres://` URL (libpq's syntax, so `?host=/socket/dir`, `?service=NAME` work), or
the Npgsql key=value string the PostgreSQL-era app itself reads from
$EFCORE_CONNECTION (`Host=...;Port=...;Database=...;Username=...;Password=...`, keys
case-insensitive, Npgsql's synonyms such as Server and User ID).

A PostgreSQL address keeps its password out of every text form: `display` (and str)
never shows it; only connect_kwargs() hands it to libpq. Without a password in the
address, libpq's own ways apply (PGPASSWORD, ~/.pgpass, PGPASSFILE, PGSERVICE).
"""

from __future__ import annotations

from pathlib import Path

from .errors import UsageError

SQLITE_KEYS = {"datasource", "filename"}

# Npgsql's keys (spaces removed, lower case) -> libpq's parameter names.
NPGSQL_KEYS = {
    "host": "host", "server": "host",
    "port": "port",
    "database": "dbname", "db": "dbname",
    "username": "user", "userid": "user", "user": "user", "uid": "user",
    "password": "password", "psw": "password", "pwd": "password",
    "passfile": "passfile",
    "timeout": "connect_timeout",
    "sslmode": "sslmode",
    "applicationname": "application_name",
    "options": "options",
    "searchpath": "options",
    "targetsessionattributes": "target_session_attrs",
    "sslcertificate": "sslcert", "sslkey": "sslkey", "rootcertificate": "sslrootcert",
}
SSL_MODES = {"verifyca": "verify-ca", "verifyfull": "verify-full"}


class PgAddress:
    """A PostgreSQL database: libpq connection parameters, the password among them."""

    engine = "postgresql"

    def __init__(self, params: dict[str, str]):
        self._params = dict(params)

    @property
    def password_given(self) -> bool:
        return bool(self._params.get("password"))

    def connect_kwargs(self) -> dict[str, str]:
        return dict(self._params)

    def get(self, key: str) -> str | None:
        """A parameter other than the password."""
        return None if key == "password" else self._params.get(key)

    @property
    def display(self) -> str:
        """postgresql://user@host:port/dbname, never the password."""
        from urllib.parse import quote  # here: SQLite runs do not need it
        p = self._params
        user = f"{quote(p['user'], safe='')}@" if p.get("user") else ""
        host = p.get("host", "")
        port = f":{p['port']}" if p.get("port") else ""
        query = []
        if host.startswith("/"):
            query.append(f"host={host}")
            host = ""
        if p.get("service"):
            query.append(f"service={p['service']}")
        tail = f"?{'&'.join(query)}" if query else ""
        return f"postgresql://{user}{host}{port}/{p.get('dbname', '')}{tail}"

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:
        return f"PgAddress({self.display!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, PgAddress) and other._params == self._params

    def __hash__(self) -> int:
        return hash(self.display)


def parse(value: str) -> Path | PgAddress:
    """--database's value as an SQLite path or a PostgreSQL address (UsageError if malformed)."""
    text = value.strip()
    if text.lower().startswith(("postgresql://", "postgres://")):
        return PgAddress(_url_params(text))
    pairs = _key_values(text)
    if pairs:
        first = pairs[0][0]
        if first in SQLITE_KEYS:
            return Path(next(v for k, v in pairs if k in SQLITE_KEYS))
        if first in NPGSQL_KEYS:
            return PgAddress(_npgsql_params(pairs))
    return Path(value)


def _url_params(url: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict
    try:
        params = conninfo_to_dict(url)
    except Exception:  # libpq's message may quote part of the URL, password included
        raise UsageError("--database: not a valid postgresql:// URL (libpq cannot parse it); "
                         "check its syntax and percent-encode special characters "
                         "(@ : / ? # %) in the user name and password") from None
    return {k: str(v) for k, v in params.items() if v is not None}


def _key_values(text: str) -> list[tuple[str, str]]:
    """Npgsql's `Key=Value;...` (values may be quoted '...' or "..."), keys normalized;
    [] if text is not such a string."""
    pairs, i = [], 0
    while i < len(text):
        eq = text.find("=", i)
        if eq < 0:
            if text[i:].strip():
                return []
            break
        key = "".join(text[i:eq].split()).lower()
        if not key or ";" in key:
            return []
        value, i = _value(text, eq + 1)
        pairs.append((key, value))
    return pairs


def _value(text: str, i: int) -> tuple[str, int]:
    """One value from position i, and the position after its `;`."""
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] in "'\"":
        quote_char, out, i = text[i], [], i + 1
        while i < len(text):
            if text[i] == quote_char:
                if text[i + 1:i + 2] == quote_char:  # a doubled quote is one quote
                    out.append(quote_char)
                    i += 2
                    continue
                break
            out.append(text[i])
            i += 1
        end = text.find(";", i)
        return "".join(out), len(text) if end < 0 else end + 1
    end = text.find(";", i)
    end = len(text) if end < 0 else end
    return text[i:end].strip(), end + 1


def _npgsql_params(pairs: list[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in pairs:
        name = NPGSQL_KEYS.get(key)
        if name is None or value == "":
            continue  # Npgsql's client-side settings (pooling, timeouts of commands ...)
        if key == "searchpath":
            value = f"-c search_path={value}"
        elif name == "sslmode":
            value = SSL_MODES.get(value.lower(), value.lower())
        params[name] = value
    return params
