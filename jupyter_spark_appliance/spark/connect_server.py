"""``python -m jupyter_spark_appliance.spark.connect_server``: a Spark Connect server with a token.

The token (the appliance's secret) and Spark's RPC secret must never be on a
command line, where every local user reads them in ``ps``. So this wrapper
reads the secret from the 0600 file ``$JSA_SPARK_AUTH_SECRET_FILE`` names
(or ``$JSA_CONNECT_SECRET``, which it removes from the environment), writes
the whole configuration into a properties file readable only by its user, and
replaces itself with ``spark-submit --properties-file FILE``. The same code
runs as a local process and inside the project's image.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from pathlib import Path

CONNECT_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
SECRET_FILE_ENV = "JSA_SPARK_AUTH_SECRET_FILE"
SECRET_ENV = "JSA_CONNECT_SECRET"
TOKEN_KEY = "spark.connect.authenticate.token"


def properties_text(conf: dict[str, str]) -> str:
    """Java properties: one ``key=value`` a line, with the characters the format treats specially escaped."""
    def escape(text: str) -> str:
        out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("=", "\\=").replace(":", "\\:")
        return out.replace("#", "\\#").replace("!", "\\!")

    return "".join(f"{escape(k)}={escape(v)}\n" for k, v in conf.items())


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def supports_token(spark_home: Path) -> bool:
    """Whether this Spark's Connect server knows ``spark.connect.authenticate.token``.

    An older one ignores the setting and would serve anyone: its config class names the key if it knows it.
    """
    for jar in sorted((spark_home / "jars").glob("spark-connect_*.jar")):
        try:
            with zipfile.ZipFile(jar) as z:
                for name in z.namelist():
                    if name.startswith("org/apache/spark/sql/connect/config/") and name.endswith(".class") \
                            and TOKEN_KEY.encode() in z.read(name):
                        return True
        except (OSError, zipfile.BadZipFile):
            continue
    return False


def read_secret() -> str:
    secret = os.environ.pop(SECRET_ENV, "")
    path = os.environ.get(SECRET_FILE_ENV, "")
    if not secret and path:
        secret = Path(path).read_text().strip()
    return secret


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jupyter_spark_appliance.spark.connect_server", description=__doc__)
    p.add_argument("--spark-home", required=True)
    p.add_argument("--master", required=True)
    p.add_argument("--properties-file", required=True, help="where to write the configuration (mode 0600)")
    p.add_argument("--conf", action="append", default=[], help="key=value (not secret)")
    args = p.parse_args(argv)
    conf = dict(c.split("=", 1) for c in args.conf)
    secret = read_secret()
    if not secret:
        sys.exit("spark-connect: no secret for its token (JSA_SPARK_AUTH_SECRET_FILE); refusing to serve without one")
    if not supports_token(Path(args.spark_home)):
        sys.exit(f"spark-connect: the Spark in {args.spark_home} has no {TOKEN_KEY} (Spark 4 has); refusing to "
                 "start a Connect server that anyone on this machine could use")
    # The master requires Spark's RPC authentication; clients need the token.
    conf.update({"spark.authenticate": "true", "spark.authenticate.secret": secret, TOKEN_KEY: secret})
    path = Path(args.properties_file)
    write_private(path, properties_text(conf))
    submit = str(Path(args.spark_home) / "bin" / "spark-submit")
    argv_out = [submit, "--class", CONNECT_CLASS, "--master", args.master, "--properties-file", str(path),
                "--name", "Spark Connect", "spark-internal"]
    os.execv(submit, argv_out)


if __name__ == "__main__":
    main()
