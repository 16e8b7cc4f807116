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

import re
from pathlib import Path

from .errors import UsageError

SQLITE_KEYS = {"datasource", "filename"}  # Microsoft.Data.Sqlite's: the file

# Npgsql's keys and synonyms (spaces removed, lower case) -> libpq's parameter names.
NPGSQL_KEYS = {
    "host": "host", "server": "host",
    "port": "port",
    "database": "dbname", "db": "dbname",
    "username": "user", "userid": "user", "user": "user", "uid": "user",
    "password": "password", "psw": "password", "pwd": "password",
    "passfile": "passfile",
    "timeout": "connect_timeout",
    "sslmode": "sslmode",
    "sslcertificate": "sslcert", "clientcertificate": "sslcert",
    "sslkey": "sslkey", "clientcertificatekey": "sslkey",
    "sslpassword": "sslpassword",
    "rootcertificate": "sslrootcert",
    "channelbinding": "channel_binding",
    "gssencryptionmode": "gssencmode",
    "kerberosservicename": "krbsrvname", "krbsrvname": "krbsrvname",
    "applicationname": "application_name",
    "clientencoding": "client_encoding",
    "options": "options",
    "searchpath": "options",
    "targetsessionattributes": "target_session_attrs",
}
# Settings of Npgsql's own client (pooling, command timeouts, buffers, logging ...), and
# its older names: accepted, and nothing for libpq to do.
NPGSQL_CLIENT_KEYS = {
    "pooling", "minpoolsize", "minimumpoolsize", "maxpoolsize", "maximumpoolsize",
    "connectionidlelifetime", "connectionpruninginterval", "connectionlifetime",
    "loadbalancetimeout", "commandtimeout", "cancellationtimeout", "internalcommandtimeout",
    "keepalive", "tcpkeepalive", "tcpkeepalivetime", "tcpkeepaliveinterval",
    "includeerrordetail", "includerealm", "logparameters", "trustservercertificate",
    "checkcertificaterevocation", "persistsecurityinfo", "integratedsecurity", "enlist",
    "encoding", "timezone", "maxautoprepare", "autoprepareminusages", "readbuffersize",
    "writebuffersize", "socketreceivebuffersize", "socketsendbuffersize", "noresetonclose",
    "loadbalancehosts", "hostrecheckseconds", "servercompatibilitymode",
    "arraynullabilitymode", "multiplexing", "writecoalescingbufferthresholdbytes",
    "loadtablecomposites", "sslnegotiation", "requireauth", "replicationmode", "compatible",
    "convertinfinitydatetime", "ssl", "usesslstream", "useperfcounters", "protocol",
    "syncnotification", "preloadreader", "useextendedtypes"}
SECRETS = ("password", "sslpassword")  # libpq's parameters no output or child may show
NPGSQL_SECRETS = {k for k, v in NPGSQL_KEYS.items() if v in SECRETS}
LOWERED = {"sslmode", "channel_binding", "gssencmode"}  # Npgsql's Require is libpq's require
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
        """A parameter other than a secret."""
        return None if key in SECRETS else self._params.get(key)

    def secrets(self) -> dict[str, str]:
        """The secret parameters given (password, sslpassword), for a child to get unseen."""
        return {k: v for k, v in self._params.items() if k in SECRETS and v}

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
    """--database's value as an SQLite path or a PostgreSQL address (UsageError if malformed).

    Whatever reads as key=value pairs is a connection string, never a file name: a
    string with Data Source (or Filename) is SQLite's, any other Npgsql's.
    """
    text = value.strip()
    if text.lower().startswith(("postgresql://", "postgres://")):
        return PgAddress(_url_params(text))
    if not _is_connection_string(text):
        return Path(value)
    pairs = _key_values(text)
    source = [v for k, v in pairs if k in SQLITE_KEYS]
    if source:
        return Path(source[0])
    return PgAddress(_npgsql_params(pairs))


def _is_connection_string(text: str) -> bool:
    """A known key before the first `=`, or key=value parts separated by `;`
    (a path such as `a=b.db` or `./x;y=1.db` stays a path)."""
    key = _normalized(text.split("=", 1)[0]) if "=" in text else ""
    if key in SQLITE_KEYS or key in NPGSQL_KEYS or key in NPGSQL_CLIENT_KEYS:
        return True
    return ";" in text and re.match(r"\s*[A-Za-z][A-Za-z0-9 _]*=", text) is not None


def _normalized(key: str) -> str:
    return "".join(key.split()).lower()


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
    """Npgsql's `Key=Value;...` (values may be quoted '...' or "...", a doubled quote
    inside being one), keys normalized. UsageError, naming a key, never a value, if
    it cannot be read."""
    pairs, i = [], 0
    while i < len(text):
        if not text[i:].strip(" ;"):
            break
        eq, semi = text.find("=", i), text.find(";", i)
        if eq < 0 or 0 <= semi < eq:
            raise UsageError(f"--database: {_where(pairs)} is not Key=Value; a value holding "
                             "';' must be quoted (Password=\"...\")")
        key = _normalized(text[i:eq])
        if not key:
            raise UsageError(f"--database: {_where(pairs)} has no key before its '='")
        value, i = _value(text, eq + 1, text[i:eq].strip())
        pairs.append((key, value))
    return pairs


def _where(pairs: list[tuple[str, str]]) -> str:
    return f"the part after key {pairs[-1][0]!r}" if pairs else "the connection string's start"


def _value(text: str, i: int, key: str) -> tuple[str, int]:
    """One value from position i, and the position after its `;`."""
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] in "'\"":
        quote_char, out, i = text[i], [], i + 1
        while True:
            if i >= len(text):
                raise UsageError(f"--database: the value of key {key!r} opens a quote that "
                                 "never closes; close it, doubling any quote inside")
            if text[i] == quote_char:
                if text[i + 1:i + 2] == quote_char:  # a doubled quote is one quote
                    out.append(quote_char)
                    i += 2
                    continue
                break
            out.append(text[i])
            i += 1
        end = text.find(";", i)
        end = len(text) if end < 0 else end
        if text[i + 1:end].strip():
            raise UsageError(f"--database: the value of key {key!r} goes on after its closing "
                             "quote; double a quote meant inside the value")
        return "".join(out), end + 1
    end = text.find(";", i)
    end = len(text) if end < 0 else end
    return text[i:end].strip(), end + 1


def _npgsql_params(pairs: list[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    previous = ""
    for key, value in pairs:
        name = NPGSQL_KEYS.get(key)
        if name is None and key not in NPGSQL_CLIENT_KEYS:
            # what follows a password may be the rest of it, cut at an unquoted ';'
            said = (f"the part after key {previous!r}" if previous in NPGSQL_SECRETS
                    else f"key {key!r}")
            raise UsageError(f"--database: {said} is not an Npgsql connection-string key; "
                             "check its spelling, and quote a value holding ';' "
                             "(Password=\"...\")")
        previous = key
        if name is None or value == "":
            continue
        if key == "searchpath":
            value = f"-c search_path={value}"
        elif name in LOWERED:
            value = SSL_MODES.get(value.lower(), value.lower())
        if name == "options" and params.get("options"):
            value = f"{params['options']} {value}"
        params[name] = value
    return params
